"""German compound splitting for the offline glossary translator.

German glues nouns together: *Windpark* is Wind + Park, *Grünflächen* is grün + Flächen,
*Hochwasserschutz* is Hochwasser + Schutz, *Aussichtsturm* is Aussicht + -s- + Turm. The
glossary cannot list every compound a visitor may type, but it knows the parts, so
:class:`CompoundSplitter` finds the segmentation into known parts and the translator joins
their English words (modifiers first, the head last: "wind farm", "green spaces", "flood
protection", "lookout tower").

How a split is found (dynamic programming over the word, lower-cased, ß as ss and umlauts
as ae/oe/ue, so "Gruenflaechen" splits like "Grünflächen"):

* every part but the last is a *modifier*: a known noun or compound adjective (grün, alt,
  hoch, ...) or an entry of the glossary's ``modifiers`` table (bade-, wohn-, lauf-, ...),
  optionally with its final -e dropped (Schul|weg) and followed by a linking element
  (*Fugenelement*): -s-, -es-, -n-, -en-, -e-, -er-, -ens-;
* the last part is the *head*: a known noun, in any inflected form the glossary
  understands (plural, dative, umlaut plural: ...|häusern, ...|bäume), which decides the
  number of the English result;
* the split with the fewest parts wins, then the one with fewer and shorter linking
  elements, then the one whose parts are longer. So a word the glossary lists whole is
  never split (the translator looks it up before splitting at all), and a listed longer
  part beats two shorter ones: *Bergbaumuseum* is Bergbau + Museum ("mining museum"),
  not Berg + Bau + Museum.

Parts shorter than ``min_part`` letters (3) are never used, and three-letter parts cost a
little extra, so short words (See, Tal, Rad) only win when nothing longer fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# German linking elements between compound parts, tried longest first
LINKS = ("ens", "es", "en", "er", "s", "n", "e", "")
MAX_PARTS = 4


@dataclass(frozen=True)
class Part:
    """One part of a split compound."""

    german: str  # the part as it appears in the word (without the linking element)
    english: str
    link: str = ""  # the linking element after it ("" for the head)
    plural: bool = False  # only for the head: the word is a plural form


@dataclass(frozen=True)
class Split:
    parts: tuple[Part, ...]

    @property
    def head(self) -> Part:
        return self.parts[-1]

    def english(self) -> str:
        """Modifiers first, then the head: "wind" + "farm" → "wind farm"."""
        words: list[str] = []
        for part in self.parts:
            for word in part.english.split():
                if not words or words[-1].casefold() != word.casefold():
                    words.append(word)
        return " ".join(words)


# (english, plural) or None for a head; english or None for a modifier
HeadLookup = Callable[[str], "tuple[str, bool] | None"]
ModifierLookup = Callable[[str], "str | None"]


class CompoundSplitter:
    """Split a (canonical: casefolded, ß→ss, umlauts→ae/oe/ue) German word into known parts.

    ``head(word)`` translates a possible last part (inflected forms included) and says
    whether it is plural; ``modifier(stem)`` translates a possible non-final part."""

    def __init__(self, head: HeadLookup, modifier: ModifierLookup, *, min_part: int = 3,
                 min_word: int = 6) -> None:
        self._head = head
        self._modifier = modifier
        self.min_part = min_part
        self.min_word = min_word

    def split(self, word: str) -> Split | None:
        """The best split of ``word`` into 2..4 known parts, or None."""
        n = len(word)
        if n < self.min_word:
            return None
        # best[i]: the best way to cover word[:i] with modifiers (+ links); cost tuple
        best: list[tuple[tuple, tuple[Part, ...]] | None] = [None] * (n + 1)
        best[0] = ((0, 0.0, 0), ())
        modifier_cache: dict[str, str | None] = {}

        def modifier(stem: str) -> str | None:
            if stem not in modifier_cache:
                found = self._modifier(stem)
                if found is None and not stem.endswith("e"):
                    found = self._modifier(stem + "e")  # Schul|weg, Kirch|turm, Erd|gas
                modifier_cache[stem] = found
            return modifier_cache[stem]

        for start in range(n):
            if best[start] is None:
                continue
            (parts_n, link_cost, neg_len), parts = best[start]
            if parts_n >= MAX_PARTS - 1:
                continue
            for end in range(start + self.min_part, n - self.min_part + 1):
                stem = word[start:end]
                english = modifier(stem)
                if english is None:
                    continue
                short = 0.5 if len(stem) < 4 else 0.0
                for link in LINKS:
                    after = end + len(link)
                    if word[end:after] != link or after > n - self.min_part:
                        continue
                    cost = (parts_n + 1, link_cost + len(link) * 0.1 + (0.05 if link else 0)
                            + short, neg_len - len(stem))
                    current = best[after]
                    if current is None or cost < current[0]:
                        best[after] = (cost, (*parts, Part(stem, english, link)))
        winner: tuple[tuple, tuple[Part, ...]] | None = None
        for start in range(self.min_part, n - self.min_part + 1):
            if best[start] is None or not best[start][1]:
                continue
            found = self._head(word[start:])
            if found is None:
                continue
            english, plural = found
            (parts_n, link_cost, neg_len), parts = best[start]
            short = 0.5 if n - start < 4 else 0.0
            cost = (parts_n + 1, link_cost + short, neg_len - (n - start))
            if winner is None or cost < winner[0]:
                winner = (cost, (*parts, Part(word[start:], english, "", plural)))
        return Split(winner[1]) if winner else None


__all__ = ["LINKS", "CompoundSplitter", "Part", "Split"]
