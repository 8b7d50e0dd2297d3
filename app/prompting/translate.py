"""Translate visitors' wishes (mostly German, typed at the museum kiosk) into English prompts.

A :class:`TranslationChain` tries its translators in order and never raises: online
deep-translator backends (LibreTranslate at a configurable URL, or Google), an offline Argos
model when one is installed, and finally the offline :class:`GlossaryTranslator`. The glossary
translator works from curated data files (``app/prompting/data/glossary_de_en.json``,
``glossary_domain_de_en.json``, ``grammar_de_en.json``): longest phrase match, German
inflections and plurals, verbs in every form, compounds split into known parts
(:mod:`app.prompting.compounds`) and a few clause rules for the usual kiosk phrasing. Good
enough to turn "Hier soll ein Windpark entstehen" into "a wind farm should be created here";
not a real MT system.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.prompting.compounds import CompoundSplitter

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
GLOSSARY_PATH = DATA_DIR / "glossary_de_en.json"
# merged in this order; a later file's entry wins
GLOSSARY_FILES = (GLOSSARY_PATH, DATA_DIR / "glossary_domain_de_en.json",
                  DATA_DIR / "grammar_de_en.json")

class TranslatorUnavailable(Exception):
    """A translator could not answer (not installed, offline, server error, timeout, ...)."""


@dataclass(frozen=True)
class Translation:
    text: str  # the (English) result, or the original text when nothing could translate it
    source_language: str  # "de", "en", ... or "unknown"
    translated: bool
    translator: str | None  # name of the translator that answered
    errors: tuple[str, ...] = field(default=())  # "name: reason" for each translator that failed


@runtime_checkable
@runtime_checkable
class Translator(Protocol):
    name: str

    def translate(self, text: str, source: str, target: str) -> str:
        """Return the translation or raise :class:`TranslatorUnavailable`."""


# --------------------------------------------------------------------------- spelling

def canon(word: str) -> str:
    """A German word as the glossary keys it: casefolded, ß as ss, umlauts as ae/oe/ue, so
    "Grünflächen", "GRÜNFLÄCHEN" and "Gruenflaechen" are one word."""
    return (word.casefold().replace("ß", "ss").replace("ä", "ae").replace("ö", "oe")
            .replace("ü", "ue"))


def _deumlaut(key: str) -> str:
    """Türme → tuerme → turme: the stem of an umlaut plural (only used to find stems)."""
    return key.replace("ae", "a").replace("oe", "o").replace("ue", "u")


# --------------------------------------------------------------------------- language detection

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_GERMAN_CHARS = set("äöüß")
_GERMAN_FUNCTION_WORDS = frozenset("""
der die das den dem des ein eine einen einem einer eines kein keine keinen und oder aber mit
auf im ins am vom zum zur bei beim neben zwischen über unter hinter vor durch für gegen ohne
ist sind wäre soll sollen sollte mehr sehr viel viele nicht auch noch nur ich wir es gibt bitte
mitten statt anstatt wie als nach aus von zu dieser diese dieses bauen mach mache möchte will
hier dort wird werden entstehen
""".split())
_ENGLISH_FUNCTION_WORDS = frozenset("""
the a an of with and or but on in at by to from for into onto over under between behind near
next is are was were be should would could please more less many much very some no not this
that these those there here it its i we you they make build add put show replace remove city
town lake river castle mountain forest village old new big small middle style like than
""".split())
_GERMAN_SUFFIXES = ("ung", "ungen", "heit", "keit", "lich", "liche", "lichen", "isch", "ische",
                    "ischen", "chen", "schaft", "stadt", "burg", "berg", "dorf")
_ENGLISH_SUFFIXES = ("ing", "tion", "ness", "ly", "ed", "ship")


def detect_language(text: str) -> str:
    """Cheap offline guess: "de", "en" or "unknown" (umlauts, function words, suffixes)."""
    words = [w.casefold() for w in _WORD.findall(text or "")]
    if not words:
        return "unknown"
    glossary = _glossary()
    de = en = 0.0
    for word in words:
        if _GERMAN_CHARS & set(word):
            de += 2
        if word in _GERMAN_FUNCTION_WORDS:
            de += 1.5
        if word in _ENGLISH_FUNCTION_WORDS:
            en += 1.5
        german_word = canon(word) in glossary.known_german
        english_word = word in glossary.known_english
        if german_word and not english_word:
            de += 1
        elif english_word and not german_word:
            en += 1
        if len(word) > 5 and word.endswith(_GERMAN_SUFFIXES):
            de += 0.5
        if len(word) > 5 and word.endswith(_ENGLISH_SUFFIXES):
            en += 0.5
        if "sch" in word or word.startswith(("zw", "pf", "sp", "st")) and len(word) > 4:
            de += 0.25
    if de == en or max(de, en) < 1:
        return "unknown"
    return "de" if de > en else "en"


# --------------------------------------------------------------------------- glossary data

_SUFFIXES = ("ern", "en", "em", "er", "es", "e", "n", "s")  # German case/plural/adjective endings
_PLURAL_SUFFIXES = {"e", "en", "n", "er", "ern", "s"}
_TOKEN = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)?\.?|\S")
_NO_SPACE_BEFORE = set(".,;:!?)]}%")
_NO_SPACE_AFTER = set("([{")
# separable verb prefixes (ab|reißen: abgerissen) and inseparable ones (ver|wandeln: verwandelt)
_SEPARABLE = ("wiederauf", "zurück", "zusammen", "trocken", "still", "fest", "frei", "nach",
              "auf", "aus", "bei", "ein", "her", "hin", "los", "mit", "vor", "weg", "neu",
              "ab", "an", "um", "zu")
_INSEPARABLE = ("über", "hinter", "wider", "miss", "emp", "ent", "ver", "zer", "be", "er", "ge")
_WERDEN = frozenset({"werden", "worden"})
_KEIN = frozenset({"kein", "keine", "keinen", "keinem", "keiner"})


@dataclass(frozen=True)
class _Verb:
    lemma: str
    english: tuple[str, str, str, str]  # base, 3rd person singular, past, participle
    preps: dict[str, tuple[str, str]]  # canon preposition -> (active, passive) English


@dataclass(frozen=True)
class _VerbForm:
    verb: _Verb
    kinds: frozenset[str]  # inf / fin / past / part


@dataclass
class _Glossary:
    phrases: dict[tuple[str, ...], str]
    max_phrase: int
    nouns: dict[str, str]
    words: dict[str, str]
    modifiers: dict[str, str]  # compound parts: non-final forms and compound adjectives
    english_plurals: dict[str, str]
    verbs: dict[str, _VerbForm]
    modals: dict[str, str]
    classes: dict[str, frozenset[str]]
    time_nouns: dict[str, str]
    known_german: frozenset[str]
    known_english: frozenset[str]
    compound_parts: frozenset[str] = frozenset()


def _verb_forms(infinitive: str, spec: dict) -> dict[str, set[str]]:
    """German forms of a verb by kind: the listed ones, else the regular (weak) ones."""
    inf = infinitive.casefold()
    stem = inf[:-2] if inf.endswith("en") else inf[:-1]
    joint = "e" if re.search(r"(?:[td]|[^aeioulrh][mn])$", stem) else ""
    forms: dict[str, set[str]] = {"inf": {inf}}
    forms["fin"] = set(spec.get("fin") or (stem + joint + "t", stem + "e"))
    forms["past"] = set(spec.get("past") or (stem + joint + "te", stem + joint + "ten"))
    if spec.get("part"):
        forms["part"] = set(spec["part"])
    else:
        prefix = next((p for p in _SEPARABLE if stem.startswith(p) and len(stem) > len(p) + 2),
                      "")
        rest = stem[len(prefix):]
        plain = rest.startswith(_INSEPARABLE) or inf.endswith("ieren")
        forms["part"] = {prefix + ("" if plain else "ge") + rest + joint + "t"}
    return forms


@lru_cache(maxsize=8)
def _load_glossary(*paths: str) -> _Glossary:
    """Merge the glossary files in order (a later file's key wins), all keys canonical."""
    phrases: dict[tuple[str, ...], str] = {}
    nouns: dict[str, str] = {}
    words: dict[str, str] = {}
    modifiers: dict[str, str] = {}
    plurals: dict[str, str] = {}
    verbs: dict[str, _VerbForm] = {}
    modals: dict[str, str] = {}
    classes: dict[str, set[str]] = {}
    time_nouns: dict[str, str] = {}
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for key, value in data.get("phrases", {}).items():
            tokens = tuple(canon(t) for t in _TOKEN.findall(key))
            if tokens:
                phrases[tokens] = value
        nouns.update({canon(k): v for k, v in data.get("nouns", {}).items()})
        words.update({canon(k): v for k, v in data.get("words", {}).items()})
        modifiers.update({canon(k): v for k, v in data.get("compound_adjectives", {}).items()})
        modifiers.update({canon(k): v for k, v in data.get("modifiers", {}).items()})
        plurals.update(data.get("english_plurals", {}))
        modals.update({canon(k): v for k, v in data.get("modals", {}).items()})
        for name, members in data.get("classes", {}).items():
            if isinstance(members, dict):
                time_nouns.update({canon(k): v for k, v in members.items()})
            else:
                classes.setdefault(name, set()).update(canon(m) for m in members)
        for infinitive, spec in data.get("verbs", {}).items():
            english = tuple(spec["en"])
            if len(english) != 4:
                raise ValueError(f"{path}: verb {infinitive!r} needs 4 English forms")
            verb = _Verb(canon(infinitive), english,  # type: ignore[arg-type]
                         {canon(k): tuple(v) for k, v in spec.get("preps", {}).items()})
            found: dict[str, set[str]] = {}
            for kind, forms in _verb_forms(infinitive, spec).items():
                for form in forms:
                    found.setdefault(canon(form), set()).add(kind)
            for form, kinds in found.items():
                verbs[form] = _VerbForm(verb, frozenset(kinds))
    german = ({t for key in phrases for t in key} | set(nouns) | set(words) | set(verbs)
              | set(modals))
    english = {w.casefold() for v in [*phrases.values(), *nouns.values(), *words.values()]
               for w in _WORD.findall(v)}
    english |= {w.casefold() for form in verbs.values() for e in form.verb.english
                for w in _WORD.findall(e)}
    return _Glossary(
        phrases=phrases, max_phrase=max((len(k) for k in phrases), default=1), nouns=nouns,
        words=words, modifiers=modifiers, english_plurals=plurals, verbs=verbs, modals=modals,
        classes={k: frozenset(v) for k, v in classes.items()}, time_nouns=time_nouns,
        known_german=frozenset(german), known_english=frozenset(english),
        compound_parts=frozenset(modifiers))


def _glossary() -> _Glossary:
    return _load_glossary(*map(str, GLOSSARY_FILES))


def _pluralize(noun: str, irregular: dict[str, str]) -> str:
    if noun in irregular:
        return irregular[noun]
    if re.search(r"[^su]s$", noun):  # the glossary's own plural entries (Bäume → "trees")
        return noun
    head, _, last = noun.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last in irregular:
        return prefix + irregular[last]
    if re.search(r"[^aeiou]y$", last):
        return f"{prefix}{last[:-1]}ies"
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return f"{prefix}{last}es"
    return f"{prefix}{last}s"


# --------------------------------------------------------------------------- glossary translator

@dataclass
class _Unit:
    """A piece of the translation: one German token or phrase and its English."""

    en: str
    de: tuple[str, ...]
    kind: str = "word"  # word noun name unknown det prep adv conj sub pron num punct frame
    #                     verb modal group
    plural: bool = False
    known: bool = True
    form: _VerbForm | None = None

    @property
    def key(self) -> str:
        return canon(self.de[0]) if self.de else ""

    def is_verb(self, *kinds: str) -> bool:
        return self.form is not None and bool(self.form.kinds & set(kinds))


class GlossaryTranslator:
    """Offline German→English from curated kiosk glossaries (``app/prompting/data``).

    Per token: phrases first (longest match), then verbs (every form, from
    ``grammar_de_en.json``), then words and nouns with German endings stripped
    (mittelalterlichen → mittelalterlich), umlaut plurals (Türme → Turm → "towers"), and
    compounds split into known parts by :class:`~app.prompting.compounds.CompoundSplitter`
    (Grünflächen → grün + Flächen → "green spaces"). Spelling without umlauts
    ("Gruenflaechen") is the same word. Then a few clause rules put the English in order:
    a modal's verb group moves next to it ("Hier soll ein Windpark entstehen" → "a wind
    farm should be created here", "… soll durch einen Wald ersetzt werden" → "… should be
    replaced by a forest"), "wie sah … aus" becomes "what … looked like", "kein … mehr"
    "no more …", "vor hundert Jahren" "a hundred years ago". Unknown words such as place
    names are kept as typed. Raises :class:`TranslatorUnavailable` when it recognised
    nothing at all. Good enough for kiosk wishes; not a real MT system.
    """

    name = "glossary"

    def __init__(self, path: str | Path | list | tuple | None = None) -> None:
        if path is None:
            paths = tuple(map(str, GLOSSARY_FILES))
        elif isinstance(path, list | tuple):
            paths = tuple(map(str, path))
        else:
            paths = (str(path),)
        self._glossary = _load_glossary(*paths)
        self._splitter = CompoundSplitter(self._compound_head, self._compound_modifier)

    # single words ---------------------------------------------------------------------------
    def _lookup(self, word: str, nouns_only: bool = False) -> tuple[str, bool, str] | None:
        """(English, plural, "noun" | "word") for a word in any inflected form, or None."""
        g = self._glossary
        key = canon(word)
        tables = (("noun", g.nouns),) if nouns_only else (("word", g.words), ("noun", g.nouns))
        for kind, table in tables:
            if key in table:
                english = table[key]
                return english, kind == "noun" and bool(re.search(r"[^su]s$", english)), kind
        if len(key) < 4:
            return None
        candidates: list[tuple[str, bool]] = []  # (stem, plural?)
        for suffix in _SUFFIXES:
            if key.endswith(suffix) and len(key) - len(suffix) >= 3:
                candidates.append((key[: -len(suffix)], suffix in _PLURAL_SUFFIXES))
        plain = _deumlaut(key)
        if plain != key:  # Türme, Städte, Wälder, Dächern: umlaut plurals
            candidates.append((plain, True))
            for suffix in _SUFFIXES:
                if plain.endswith(suffix) and len(plain) - len(suffix) >= 3:
                    candidates.append((plain[: -len(suffix)], True))
        for stem, plural in candidates:
            if stem in g.nouns:
                english = g.nouns[stem]
                if english[:1].isupper():  # a name: Sauerlands is a genitive, not a plural
                    return english, False, "noun"
                return (_pluralize(english, g.english_plurals) if plural else english,
                        plural, "noun")
            if not nouns_only and stem in g.words and g.words[stem]:
                return g.words[stem], False, "word"
        return None

    def _compound_head(self, part: str) -> tuple[str, bool] | None:
        found = self._lookup(part, nouns_only=True)
        return (found[0], found[1]) if found else None

    def _compound_modifier(self, stem: str) -> str | None:
        g = self._glossary
        if stem in g.modifiers:
            return g.modifiers[stem]
        for ending in ("en", "n", "e", "er"):  # Straßen|bäume: the modifier is singular
            if stem.endswith(ending) and stem[: -len(ending)] in g.nouns and stem in g.nouns:
                return g.nouns[stem[: -len(ending)]]
        return g.nouns.get(stem)

    def split_compound(self, word: str):
        """The compound split of ``word`` (a :class:`~app.prompting.compounds.Split`), or
        None. Only splits; a word the glossary lists whole is still split here."""
        return self._splitter.split(canon(word))

    def _compound(self, word: str) -> tuple[str, bool] | None:
        split = self.split_compound(word)
        return (split.english(), split.head.plural) if split else None

    # units ----------------------------------------------------------------------------------
    def _class_of(self, key: str) -> str | None:
        for name, kind in (("determiners", "det"), ("prepositions", "prep"),
                           ("adverbs", "adv"), ("conjunctions", "conj"),
                           ("subordinators", "sub"), ("pronouns", "pron"), ("numbers", "num")):
            if key in self._glossary.classes.get(name, ()):
                return kind
        return None

    def _units(self, tokens: list[str]) -> list[_Unit]:
        g = self._glossary
        keys = [canon(t) for t in tokens]
        units: list[_Unit] = []
        i = 0
        while i < len(tokens):
            token, key = tokens[i], keys[i]
            for size in range(min(g.max_phrase, len(tokens) - i), 1, -1):
                phrase = tuple(keys[i: i + size])
                if phrase in g.phrases:
                    english = g.phrases[phrase]
                    first = self._class_of(phrase[0])
                    kind = "frame" if not english else first or "word"
                    if not english and self._class_of(phrase[-1]) == "sub":
                        kind = "sub"  # "es wäre schön, wenn …" opens a subordinate clause
                    units.append(_Unit(english, tuple(tokens[i: i + size]), kind))
                    i += size
                    break
            else:
                if i + 2 < len(tokens) and tokens[i + 1] == "-" and token[0].isalpha() and \
                        tokens[i + 2][0].isalpha():  # U-Bahn, S-Bahn, PV-Anlage: listed whole
                    found = self._lookup(f"{token}-{tokens[i + 2]}")
                    if found is not None:
                        units.append(_Unit(found[0], tuple(tokens[i: i + 3]), "noun",
                                           plural=found[1]))
                        i += 3
                        continue
                units.append(self._unit(token, key, first=not units or
                                        units[-1].kind in ("punct", "frame")))
                i += 1
        return units

    def _unit(self, token: str, key: str, first: bool) -> _Unit:
        g = self._glossary
        de = (token,)
        if not token[0].isalpha():
            if token[0].isdigit():
                return _Unit(token, de, "num")
            return _Unit(token, de, "punct" if token in ".,;:!?" else "word", known=False)
        if (key,) in g.phrases:
            english = g.phrases[(key,)]
            return _Unit(english, de, self._class_of(key) or ("frame" if not english
                                                               else "word"))
        noun_first = token[0].isupper() and not first  # German nouns are capitalised
        if key in g.modals and not noun_first:
            return _Unit(g.modals[key], de, "modal")
        if key in g.verbs and not (noun_first and self._lookup(token, nouns_only=True)):
            form = g.verbs[key]
            english = form.verb.english
            text = english[3] if "part" in form.kinds and "inf" not in form.kinds else \
                english[2] if "past" in form.kinds and "inf" not in form.kinds else \
                english[0] if "inf" in form.kinds else english[1]
            return _Unit(text, de, "verb", form=form)
        kind = self._class_of(key)
        if kind is not None and key in g.words:
            return _Unit(g.words[key], de, kind)
        found = self._lookup(token)
        if found is None and len(key) >= 6:
            compound = self._compound(token)
            if compound is not None:
                found = (compound[0], compound[1], "noun")
        if found is not None:
            english, plural, table = found
            return _Unit(english, de, kind or table, plural=plural)
        if kind is not None:
            return _Unit(token, de, kind, known=False)
        return _Unit(token, de, "name" if token[0].isupper() else "unknown", known=False)

    # clause rules ----------------------------------------------------------------------------
    def _restructure(self, units: list[_Unit]) -> list[_Unit]:
        """Put the English of each clause in order (see the class docstring)."""
        sentences: list[list[_Unit]] = [[]]
        for unit in units:
            sentences[-1].append(unit)
            if unit.kind == "punct" and unit.en in ".!?;":
                sentences.append([])
        out: list[_Unit] = []
        for sentence in sentences:
            out += self._sentence(sentence)
        return out

    def _sentence(self, units: list[_Unit]) -> list[_Unit]:
        clauses: list[list[_Unit]] = [[]]
        for unit in units:
            if unit.kind in ("punct", "conj") or (unit.kind == "sub" and clauses[-1]):
                clauses.append([unit])
                if unit.kind in ("punct", "conj"):
                    clauses.append([])
            else:
                clauses[-1].append(unit)
        first = next((i for i, u in enumerate(clauses[0]) if u.kind not in ("frame", "sub")),
                     None)
        if first is not None and clauses[0][first].is_verb("fin") and \
                len(clauses[0]) > first + 1 and clauses[0][first].form is not None:
            # "Ersetze die Straße durch einen Kanal": an imperative, the verb's base form
            verb = clauses[0][first]
            clauses[0][first] = _Unit(verb.form.verb.english[0], verb.de, "group", form=verb.form)
            clauses[0][first + 1:] = self._with_preps(clauses[0][first + 1:], verb.form.verb,
                                                      False, [verb])
        out: list[_Unit] = []
        carry: _Unit | None = None  # the modal of the previous clause ("... soll X und Y")
        for clause in clauses:
            done, modal = self._clause(clause, carry)
            carry = modal or (carry if clause and clause[0].kind == "conj" else None)
            out += done
        return self._infinitive_wish(out)

    def _clause(self, units: list[_Unit],
                carry: _Unit | None) -> tuple[list[_Unit], _Unit | None]:
        if not units or units[0].kind in ("punct", "conj"):
            return units, None
        units = self._small_rules(units)
        lead = 0  # dropped framing ("ich wünsche mir") and a subordinator stay in front
        while lead < len(units) and units[lead].kind in ("frame", "sub"):
            lead += 1
        head, body = units[:lead], units[lead:]
        if head and body and body[0].key == "das" and len(body) > 2 and \
                (body[-1].kind == "modal" or body[-1].is_verb("fin", "past")):
            head, body = [*head, _Unit("", body[0].de, "sub")], body[1:]  # "das" for "dass"
        looks = self._looks_like(body)
        if looks is not None:
            return head + looks, None
        modal_at = next((i for i, u in enumerate(body) if u.kind == "modal"), None)
        group_at = self._verb_group_start(body, stop=modal_at)
        subordinate = any(u.kind == "sub" for u in head)
        if subordinate and body and modal_at == len(body) - 1:  # "dass hier ein See entstehen soll"
            group_at = self._verb_group_start(body[:-1], stop=None)
            if group_at is not None:
                return head + self._verb_last(body[:group_at], body[-1],
                                              body[group_at:-1]), None
        if subordinate and modal_at is None and group_at is not None and \
                body[group_at].is_verb("fin", "past"):  # "dass hier ein See entsteht"
            return head + self._verb_last(body[:group_at], None, body[group_at:]), None
        if modal_at is None or group_at is None or group_at <= modal_at:
            if modal_at is None and carry is not None and group_at is not None and \
                    body[group_at].is_verb("inf", "part") and group_at > 0:
                return head + self._modal_clause([], carry, body[:group_at],
                                                 body[group_at:]), carry
            return units, body[modal_at] if modal_at is not None else None
        modal = body[modal_at]
        return head + self._modal_clause(body[:modal_at], modal, body[modal_at + 1: group_at],
                                         body[group_at:]), modal

    def _verb_group_start(self, body: list[_Unit], stop: int | None) -> int | None:
        """Where the clause-final verb group starts (a verb form, then werden/sein/haben;
        or "hin"), at most three units and after ``stop``; None when there is none."""
        start = None
        i = len(body) - 1
        while i >= 0 and (stop is None or i > stop) and len(body) - i <= 3:
            unit = body[i]
            if not (unit.key in _WERDEN and len(unit.de) == 1 or unit.key == "hin"
                    or unit.is_verb("inf", "part", "fin", "past")):
                break
            start = i
            i -= 1
        return start

    def _group_english(self, group: list[_Unit],
                       modal: _Unit | None) -> tuple[str, bool, _Verb | None]:
        """English of a verb group (with its modal), whether it is passive, and its verb."""
        main = group[0]
        aux = {u.key for u in group[1:]}
        verb = main.form.verb if main.form else None
        passive = False
        if main.key == "hin" or (verb and verb.lemma == "hinkommen"):
            text = "go"
        elif verb is None:  # werden alone: "soll autofrei werden"
            text = "become"
        elif aux & _WERDEN and main.is_verb("part"):
            text, passive = f"be {verb.english[3]}", True
        elif "sein" in aux and main.is_verb("part"):
            text = f"be {verb.english[3]}"
        elif "haben" in aux and main.is_verb("part"):
            text = f"have {verb.english[3]}"
        elif main.is_verb("inf"):
            text = verb.english[0]
        elif main.is_verb("part") and modal is not None and modal.key in ("wird", "werden",
                                                                            "wurde", "wurden"):
            text, passive = f"be {verb.english[3]}", True
        elif main.is_verb("fin"):
            text = verb.english[1]
        elif main.is_verb("past"):
            text = verb.english[2]
        else:
            text = verb.english[0]
        if modal is None:
            return text, passive, verb
        said = modal.en
        if modal.key in ("wird", "werden", "wurde", "wurden"):
            if passive:
                be = {"wird": "is", "werden": "are", "wurde": "was", "wurden": "were"}[modal.key]
                return f"{be} {text.removeprefix('be ')}", True, verb
            said = "will" if modal.key in ("wird", "werden") else "would"
        return f"{said} {text}", passive, verb

    def _with_preps(self, units: list[_Unit], verb: _Verb | None, passive: bool,
                    group: list[_Unit]) -> list[_Unit]:
        """Prepositions as the verb reads them: ersetzen … durch → "with" / passive "by";
        werden zum → "a"."""
        out = []
        for unit in units:
            key = unit.key if len(unit.de) == 1 else None
            english = None
            if key and verb is not None and key in verb.preps:
                english = verb.preps[key][1 if passive else 0]
            elif key and passive and key in ("durch", "von"):
                english = "by"
            elif key and verb is None and group[0].key in _WERDEN and key in ("zum", "zur", "zu"):
                english = "" if key == "zu" else "a"
            out.append(_Unit(english, unit.de, unit.kind, unit.plural) if english is not None
                       else unit)
        return out

    def _modal_clause(self, front: list[_Unit], modal: _Unit, middle: list[_Unit],
                      group: list[_Unit]) -> list[_Unit]:
        english, passive, verb = self._group_english(group, modal)
        unit = _Unit(english, tuple(t for u in (modal, *group) for t in u.de), "group")
        middle = self._with_preps(middle, verb, passive, group)
        adverbial = not front or front[0].kind in ("adv", "prep")
        lead = 0
        while lead < len(middle) and middle[lead].kind == "adv":
            lead += 1
        if not adverbial:  # "Die Autobahn soll durch einen Wald ersetzt werden"
            return [*front, unit, *middle[lead:], *middle[:lead]]
        # "Hier soll ein Windpark entstehen" → "a wind farm should be created here"
        subject = self._np_end(middle[lead:]) + lead
        if subject == lead:
            return [*middle, unit, *front]
        return [*middle[lead:subject], unit, *middle[subject:], *front, *middle[:lead]]

    def _verb_last(self, body: list[_Unit], modal: _Unit | None,
                   group: list[_Unit]) -> list[_Unit]:
        """A subordinate clause ("dass hier ein See entsteht"): subject, verb, the rest."""
        english, passive, verb = self._group_english(group, modal)
        unit = _Unit(english, tuple(t for u in ([modal] if modal else []) + group
                                    for t in u.de), "group")
        body = self._with_preps(body, verb, passive, group)
        lead = 0
        while lead < len(body) and body[lead].kind in ("adv", "prep") and \
                self._np_end(body[lead:]) == 0:
            lead += 1
        subject = self._np_end(body[lead:]) + lead
        rest = subject
        while rest < len(body) and body[rest].kind == "adv":
            rest += 1
        return [*body[lead:subject], unit, *body[rest:], *body[:lead], *body[subject:rest]]

    @staticmethod
    def _np_end(units: list[_Unit]) -> int:
        """Length of the noun phrase at the start (det* num* adjective* noun), or 0."""
        i = 0
        while i < len(units) and units[i].kind in ("det", "num"):
            i += 1
        while i < len(units) and units[i].kind == "word" and i + 1 < len(units):
            i += 1
        if i < len(units) and units[i].kind in ("noun", "name", "pron", "unknown"):
            return i + 1
        return 0

    def _looks_like(self, body: list[_Unit]) -> list[_Unit] | None:
        """"Wie sah Olpe im Mittelalter aus?" → "what Olpe looked like in the Middle Ages?"."""
        if len(body) < 3 or body[0].key != "wie":
            return None
        verb, last = body[1], body[-1]
        trail: list[_Unit] = []
        if last.kind == "punct":
            body, trail = body[:-1], [last]
            last = body[-1]
        if verb.form is not None and verb.form.verb.lemma == "sehen" and last.key == "aus":
            said = "looked like" if verb.is_verb("past") else "looks like"
        elif verb.kind == "modal" and last.form is not None and \
                last.form.verb.lemma == "aussehen":
            said = f"{'will' if verb.key in ('wird', 'werden') else verb.en} look like"
        else:
            return None
        middle = body[2:-1]
        subject = self._np_end(middle)
        looked = _Unit(said, (verb.de[0], last.de[0]), "group")
        return [_Unit("what", body[0].de, "word"), *middle[:subject], looked,
                *middle[subject:], *trail]

    def _small_rules(self, units: list[_Unit]) -> list[_Unit]:
        """kein … mehr, vor hundert Jahren, als + noun, nach + place, genitive des."""
        g = self._glossary
        out = list(units)
        for i, unit in enumerate(out):
            if unit.key in _KEIN:  # "kein Verkehr mehr" → "no more traffic"
                for j in range(i + (1 if len(unit.de) > 1 else 2), min(i + 5, len(out))):
                    if out[j].key == "mehr" and len(out[j].de) == 1:
                        out[i] = _Unit(re.sub(r"^no\b", "no more", unit.en), unit.de, unit.kind)
                        out[j] = _Unit("", out[j].de, "frame")
                        break
        i = 0
        while i < len(out):
            unit = out[i]
            if unit.key == "vor" and len(unit.de) == 1:  # vor hundert Jahren → … years ago
                j = i + 1
                while j < len(out) and out[j].kind == "num":
                    j += 1
                if j > i + 1 and j < len(out) and out[j].key in g.time_nouns:
                    ago = _Unit(f"{g.time_nouns[out[j].key]} ago", out[j].de, "word")
                    out[i: j + 1] = [*out[i + 1: j], ago]
                    continue
            nxt = out[i + 1] if i + 1 < len(out) else None
            if nxt is not None and len(unit.de) == 1:
                if unit.key == "als" and nxt.kind == "noun" and not nxt.plural:
                    out[i] = _Unit("as a", unit.de, unit.kind)
                elif unit.key == "nach" and nxt.en[:1].isupper() and nxt.kind in ("name", "noun"):
                    out[i] = _Unit("to", unit.de, unit.kind)
                elif unit.key == "weniger" and unit.en == "less" and nxt.plural:
                    out[i] = _Unit("fewer", unit.de, unit.kind)
                elif unit.key in ("des", "eines", "der") and i > 0 and \
                        out[i - 1].kind in ("noun", "name") and unit.en in ("the", "a"):
                    # genitive after a noun: "die Mauern der Altstadt" → "the walls of the …"
                    out[i] = _Unit("of a" if unit.key == "eines" else "of the", unit.de,
                                   unit.kind)
                if unit.key in ("des", "eines"):  # genitive -s/-es is no plural: des Klimas
                    out[i + 1] = self._genitive(nxt)
            i += 1
        return out

    def _genitive(self, unit: _Unit) -> _Unit:
        if unit.kind != "noun" or not unit.plural or len(unit.de) != 1:
            return unit
        word = unit.de[0]
        for ending in ("es", "s"):
            if word.casefold().endswith(ending):
                found = self._lookup(word[: -len(ending)], nouns_only=True)
                if found is not None and not found[1]:
                    return _Unit(found[0], unit.de, "noun")
        return unit

    def _infinitive_wish(self, units: list[_Unit]) -> list[_Unit]:
        """A wish with no finite verb that ends in an infinitive ("Mehr Bäume am Fluss
        pflanzen", "Hier einen See bauen"): the verb goes first, as an imperative."""
        if any(u.kind in ("modal", "group") or u.is_verb("fin", "past", "part") and
               not u.is_verb("inf") for u in units):
            return units
        end = len(units)
        while end and units[end - 1].kind == "punct":
            end -= 1
        if end < 2 or not units[end - 1].is_verb("inf") or \
                units[end - 2].kind in ("pron", "modal"):
            return units
        verb = units[end - 1]
        if verb.form is not None and verb.form.verb.lemma in ("haben", "sehen", "sein"):
            verb = _Unit("", verb.de, "frame")  # "ich möchte hier einen See haben"
        lead = 0
        while lead < end - 1 and units[lead].kind in ("frame", "sub"):
            lead += 1
        adverbs = lead
        while adverbs < end - 1 and units[adverbs].kind == "adv":
            adverbs += 1
        return [*units[:lead], verb, *units[adverbs: end - 1], *units[lead:adverbs],
                *units[end:]]

    # whole text -------------------------------------------------------------------------------
    def translate_tokens(self, text: str) -> tuple[str, int]:
        """Return the English text and how many German tokens were recognised."""
        units = self._units(_TOKEN.findall(text))
        known = sum(1 for u in units if u.known and u.kind != "punct" and
                    u.en.casefold() != " ".join(u.de).casefold())
        units = self._restructure(units)
        return _tidy([u.en for u in units if u.en]), known

    def translate(self, text: str, source: str = "de", target: str = "en") -> str:
        if target != "en" or source not in ("de", "auto", "unknown"):
            raise TranslatorUnavailable(f"glossary only knows de→en, not {source}→{target}")
        english, known = self.translate_tokens(text)
        if not known:
            raise TranslatorUnavailable("no glossary word in the text")
        return english


def _tidy(parts: list[str]) -> str:
    text = ""
    for part in parts:
        if not text:
            if part in _NO_SPACE_BEFORE:  # "Ich wünsche mir, dass …": the framing was dropped
                continue
            text = part
        elif part in _NO_SPACE_BEFORE or part == "-" or text[-1] in _NO_SPACE_AFTER or \
                text.endswith("-"):
            text += part
        else:
            text += " " + part
    text = re.sub(r"\b(the|a)\s+(the|a)\b", r"\2", text, flags=re.IGNORECASE)  # "in the the"
    text = re.sub(r"\b(a|an) (a|an)\b", r"\2", text, flags=re.IGNORECASE)
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)  # a old → an old
    text = re.sub(r"\b([Aa])n (?=[^aeiouAEIOU\W])", r"\1 ", text)  # an new → a new
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip(" ,;:")


# --------------------------------------------------------------------------- online / models

def _call_with_timeout(fn: Callable[[], str], timeout: float, what: str) -> str:
    """Run a blocking call (deep-translator has no timeouts) in a daemon thread, bounded."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"translate-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TranslatorUnavailable(f"{what} timed out after {timeout:g} s")
    if "error" in box:
        exc = box["error"]
        raise TranslatorUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    value = box.get("value")
    if not isinstance(value, str) or not value.strip():
        raise TranslatorUnavailable(f"{what} returned no text")
    return value.strip()


class DeepTranslatorTranslator:
    """deep-translator's LibreTranslator (custom URL, e.g. self-hosted) or GoogleTranslator.

    deep-translator's requests have no timeout, so each call runs in a daemon thread bounded
    by ``timeout``; after a failure the backend is skipped for ``cooldown`` seconds so a kiosk
    without network does not wait on every wish.
    """

    def __init__(self, backend: str = "google", url: str | None = None,
                 api_key: str | None = None, timeout: float = 5.0, cooldown: float = 60.0):
        if backend not in ("google", "libretranslate"):
            raise ValueError(f"unknown deep-translator backend {backend!r}")
        self.backend = backend
        self.name = backend
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        self.cooldown = cooldown
        self._failed_at: float | None = None

    def _make(self, source: str, target: str):
        try:
            import deep_translator
        except ImportError as exc:
            raise TranslatorUnavailable("deep-translator is not installed") from exc
        if self.backend == "google":
            return deep_translator.GoogleTranslator(source=source, target=target)
        url = (self.url or "").strip()
        if not url:
            raise TranslatorUnavailable("no LibreTranslate URL configured")
        # deep-translator appends "translate" to the URL and insists on some API key; a
        # LibreTranslate server that has keys switched off ignores the placeholder.
        return deep_translator.LibreTranslator(
            source=source, target=target, api_key=self.api_key or "none",
            custom_url=url.rstrip("/") + "/")

    def translate(self, text: str, source: str, target: str) -> str:
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.cooldown:
            raise TranslatorUnavailable(f"{self.name} failed recently; cooling down")
        source = source if source and source != "unknown" else "auto"
        try:
            translator = self._make(source, target)
        except TranslatorUnavailable:
            raise
        except Exception as exc:  # unsupported language, missing key, ...
            raise TranslatorUnavailable(f"{self.name}: {exc}") from exc
        try:
            result = _call_with_timeout(lambda: translator.translate(text), self.timeout,
                                        self.name)
        except TranslatorUnavailable:
            self._failed_at = time.monotonic()
            raise
        self._failed_at = None
        return result


class ArgosTranslator:
    """Offline neural translation with Argos Translate, if it and a de→en package are installed."""

    name = "argos"

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    @staticmethod
    def _pair(source: str, target: str):
        try:
            from argostranslate import translate as argos
        except ImportError as exc:
            raise TranslatorUnavailable("argostranslate is not installed") from exc
        try:
            languages = {lang.code: lang for lang in argos.get_installed_languages()}
        except Exception as exc:
            raise TranslatorUnavailable(f"argos: {exc}") from exc
        if source not in languages or target not in languages:
            raise TranslatorUnavailable(f"no argos package for {source}→{target}")
        pair = languages[source].get_translation(languages[target])
        if pair is None:
            raise TranslatorUnavailable(f"no argos package for {source}→{target}")
        return pair

    @classmethod
    def available(cls, source: str = "de", target: str = "en") -> bool:
        try:
            cls._pair(source, target)
        except TranslatorUnavailable:
            return False
        return True

    def translate(self, text: str, source: str, target: str) -> str:
        pair = self._pair("de" if source in ("auto", "unknown") else source, target)
        return _call_with_timeout(lambda: pair.translate(text), self.timeout, self.name)


# --------------------------------------------------------------------------- chain

class TranslationChain:
    """Try each translator in order; fall back to the original text. Never raises."""

    def __init__(self, translators: list[Translator]) -> None:
        self.translators = list(translators)

    def translate(self, text: str, target: str = "en", source: str | None = None) -> Translation:
        try:
            return self._translate(text, target, source)
        except Exception as exc:  # belt and braces: a prompt must never fail on translation
            log.exception("translation failed unexpectedly")
            return Translation(text, source or "unknown", False, None, (f"chain: {exc}",))

    def _translate(self, text: str, target: str, source: str | None) -> Translation:
        if not text or not text.strip():
            return Translation(text, source or "unknown", False, None)
        language = (source or detect_language(text)).lower()
        if language == target:
            return Translation(text, language, False, None)
        errors: list[str] = []
        for translator in self.translators:
            name = getattr(translator, "name", type(translator).__name__)
            try:
                result = translator.translate(text, language, target)
            except TranslatorUnavailable as exc:
                errors.append(f"{name}: {exc}")
                continue
            except Exception as exc:  # a translator that breaks the protocol
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(result, str) or not result.strip():
                errors.append(f"{name}: empty answer")
                continue
            return Translation(result.strip(), language, True, name, tuple(errors))
        if errors:
            log.info("no translator could translate %r: %s", text, "; ".join(errors))
        return Translation(text, language, False, None, tuple(errors))


def build_chain(online: bool, libretranslate_url: str | None = None,
                api_key: str | None = None, timeout: float = 5.0) -> TranslationChain:
    """Online deep-translator (LibreTranslate at ``libretranslate_url``, else Google) when
    ``online``, Argos when installed with a de→en package, then the offline glossary."""
    translators: list[Translator] = []
    if online:
        if libretranslate_url:
            translators.append(DeepTranslatorTranslator(
                "libretranslate", url=libretranslate_url, api_key=api_key, timeout=timeout))
        else:
            translators.append(DeepTranslatorTranslator("google", timeout=timeout))
    if ArgosTranslator.available():
        translators.append(ArgosTranslator())
    translators.append(GlossaryTranslator())
    return TranslationChain(translators)
