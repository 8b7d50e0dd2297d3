"""The German compound splitter: the algorithm on a small lexicon (linking elements,
elided -e, the fewest parts, inflected heads), and through the glossary translator."""

from __future__ import annotations

import pytest

from app.prompting.compounds import CompoundSplitter, Split
from app.prompting.translate import GlossaryTranslator, canon

HEADS = {"park": "park", "flaeche": "area", "turm": "tower", "weg": "path", "strasse": "road",
         "baum": "tree", "haus": "house", "hoehle": "cave", "fenster": "window",
         "museum": "museum", "bau": "construction", "gebiet": "area", "schutz": "protection"}
MODIFIERS = {"wind": "wind", "gruen": "green", "aussicht": "lookout", "schule": "school",
             "bund": "federal", "obst": "fruit", "baer": "bear", "kirche": "church",
             "berg": "mountain", "bergbau": "mining", "natur": "nature", "rat": "council"}


def head(word: str):
    """A tiny noun lookup: the word, or a plural in -e/-n/-en/-er (Bäume → baeume)."""
    if word in HEADS:
        return HEADS[word], False
    for ending in ("en", "er", "e", "n"):
        stem = word[: -len(ending)] if word.endswith(ending) else None
        for candidate in filter(None, (stem, stem and stem.replace("ae", "a")
                                       .replace("ue", "u").replace("oe", "o"))):
            if candidate in HEADS:
                return HEADS[candidate] + "s", True
    return None


@pytest.fixture
def splitter() -> CompoundSplitter:
    return CompoundSplitter(head, lambda stem: MODIFIERS.get(stem) or HEADS.get(stem))


def parts(split: Split | None) -> list[tuple[str, str]]:
    assert split is not None
    return [(p.german, p.link) for p in split.parts]


def test_two_known_parts(splitter):
    split = splitter.split("windpark")
    assert parts(split) == [("wind", ""), ("park", "")]
    assert split.english() == "wind park" and not split.head.plural


def test_an_inflected_head_makes_the_english_plural(splitter):
    split = splitter.split(canon("Grünflächen"))
    assert parts(split) == [("gruen", ""), ("flaechen", "")]
    assert split.english() == "green areas" and split.head.plural
    assert splitter.split("gruenflaechen") == split  # typed without umlauts
    assert splitter.split(canon("Obstbäume")).english() == "fruit trees"


@pytest.mark.parametrize("word, link, english", [
    ("aussichtsturm", "s", "lookout tower"),  # -s-
    ("bundesstrasse", "es", "federal road"),  # -es-
    ("kirchenfenster", "n", "church window"),  # -n-
    ("baerenhoehle", "en", "bear cave"),  # -en-
])
def test_linking_elements(splitter, word, link, english):
    split = splitter.split(word)
    assert split.parts[0].link == link and split.english() == english


def test_an_elided_e(splitter):
    split = splitter.split("schulweg")  # Schule + Weg
    assert parts(split) == [("schul", ""), ("weg", "")]
    assert split.english() == "school path"


def test_three_parts(splitter):
    assert splitter.split("naturschutzgebiet").english() == "nature protection area"


def test_the_fewest_parts_win(splitter):
    # Bergbau|museum (2 parts), not Berg|bau|museum (3)
    assert parts(splitter.split("bergbaumuseum")) == [("bergbau", ""), ("museum", "")]
    # with both readings two parts long, the longer first part wins: Rat|haus
    assert splitter.split("rathaus").english() == "council house"


def test_nothing_to_split(splitter):
    assert splitter.split("olpe") is None  # too short
    assert splitter.split("attendorn") is None  # no known parts
    assert splitter.split("windxyz") is None  # no known head
    assert splitter.split("parkwind") is None  # a modifier is no head


def test_the_glossary_splits_what_it_does_not_list():
    glossary = GlossaryTranslator()
    for word, english in [
        ("Kohlekraftwerke", "coal power plants"),
        ("Hochwasserschutz", "flood protection"),
        ("Seeufer", "lakeshore"),
        ("Maisfeldern", "cornfields"),
        ("Kirchenfenster", "church window"),
        ("Sonnenblumenfelder", "sunflower fields"),
        ("Wasserspielplatz", "water playground"),
        ("Biggeufer", "Bigge river shore"),
        ("Baumhaus", "tree house"),
        ("Weltraumstadt", "space city"),
    ]:
        assert glossary.translate(word, "de", "en") == english, word


def test_the_glossary_split_of_the_issue_words():
    glossary = GlossaryTranslator()
    wind = glossary.split_compound("Windpark")
    assert [p.german for p in wind.parts] == ["wind", "park"]
    green = glossary.split_compound("Grünflächen")
    assert [p.german for p in green.parts] == ["gruen", "flaechen"]
    assert green.head.plural and green.english() == "green areas"
    # the listed whole words win over the split when translating
    assert glossary.translate("Windpark", "de", "en") == "wind farm"
    assert glossary.translate("Grünflächen", "de", "en") == "green spaces"
