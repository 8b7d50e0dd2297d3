"""Translate visitors' wishes (mostly German, typed at the museum kiosk) into English prompts.

A :class:`TranslationChain` tries its translators in order and never raises: online
deep-translator backends (LibreTranslate at a configurable URL, or Google), an offline Argos
model when one is installed, and finally the offline :class:`GlossaryTranslator`. The glossary
is word-level (longest phrase match, German inflections and plurals, simple compounds): good
enough to turn "eine Burg auf dem Berg" into "a castle on the mountain", not a real MT system.
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

log = logging.getLogger(__name__)

GLOSSARY_PATH = Path(__file__).parent / "data" / "glossary_de_en.json"


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
class Translator(Protocol):
    name: str

    def translate(self, text: str, source: str, target: str) -> str:
        """Return the translation or raise :class:`TranslatorUnavailable`."""


# --------------------------------------------------------------------------- language detection

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_GERMAN_CHARS = set("äöüß")
_GERMAN_FUNCTION_WORDS = frozenset("""
der die das den dem des ein eine einen einem einer eines kein keine keinen und oder aber mit
auf im ins am vom zum zur bei beim neben zwischen über unter hinter vor durch für gegen ohne
ist sind wäre soll sollte mehr sehr viel viele nicht auch noch nur ich wir es gibt bitte
mitten statt anstatt wie als nach aus von zu dieser diese dieses bauen mach mache möchte will
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
        german_word = word in glossary.known_german
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


# --------------------------------------------------------------------------- glossary

_SUFFIXES = ("ern", "en", "em", "er", "es", "e", "n", "s")  # German case/plural/adjective endings
_PLURAL_SUFFIXES = {"e", "en", "n", "er", "ern", "s"}
_LINKING = ("s", "es", "n", "en", "e", "")
_UMLAUT = str.maketrans({"ä": "a", "ö": "o", "ü": "u"})
_TOKEN = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)?|\S")
_NO_SPACE_BEFORE = set(".,;:!?)]}%")
_NO_SPACE_AFTER = set("([{")


@dataclass
class _Glossary:
    phrases: dict[tuple[str, ...], str]
    max_phrase: int
    nouns: dict[str, str]
    words: dict[str, str]
    english_plurals: dict[str, str]
    known_german: frozenset[str]
    known_english: frozenset[str]


@lru_cache(maxsize=4)
def _load_glossary(path: str) -> _Glossary:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    phrases: dict[tuple[str, ...], str] = {}
    for key, value in data.get("phrases", {}).items():
        tokens = tuple(t.casefold() for t in _TOKEN.findall(key))
        if tokens:
            phrases[tokens] = value
    nouns = {k.casefold(): v for k, v in data.get("nouns", {}).items()}
    words = {k.casefold(): v for k, v in data.get("words", {}).items()}
    german = {t for key in phrases for t in key} | set(nouns) | set(words)
    english = {w.casefold() for v in [*phrases.values(), *nouns.values(), *words.values()]
               for w in _WORD.findall(v)}
    return _Glossary(
        phrases=phrases,
        max_phrase=max((len(k) for k in phrases), default=1),
        nouns=nouns,
        words=words,
        english_plurals=dict(data.get("english_plurals", {})),
        known_german=frozenset(german),
        known_english=frozenset(english),
    )


def _glossary() -> _Glossary:
    return _load_glossary(str(GLOSSARY_PATH))


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


class GlossaryTranslator:
    """Offline German→English, word by word from a curated kiosk glossary.

    Phrases first (longest match), then single words with German endings stripped
    (mittelalterlichen → mittelalterlich), umlaut plurals (Türme → Turm → "towers") and
    two-part compounds (Stadtpark → "city park"). Unknown words such as place names are kept
    as typed. Raises :class:`TranslatorUnavailable` when it recognised nothing at all.
    """

    name = "glossary"

    def __init__(self, path: str | Path | None = None) -> None:
        self._glossary = _load_glossary(str(path or GLOSSARY_PATH))

    # single words ---------------------------------------------------------------------------
    def _lookup(self, word: str, nouns_only: bool = False) -> str | None:
        g = self._glossary
        key = word.casefold()
        for table in (g.nouns,) if nouns_only else (g.words, g.nouns):
            if key in table:
                return table[key]
        if len(key) < 4:
            return None
        candidates: list[tuple[str, bool]] = []  # (stem, plural?)
        for suffix in _SUFFIXES:
            if key.endswith(suffix) and len(key) - len(suffix) >= 3:
                candidates.append((key[: -len(suffix)], suffix in _PLURAL_SUFFIXES))
        plain = key.translate(_UMLAUT)
        if plain != key:  # Türme, Städte, Wälder: umlaut plurals
            candidates.append((plain, True))
            for suffix in _SUFFIXES:
                if plain.endswith(suffix) and len(plain) - len(suffix) >= 3:
                    candidates.append((plain[: -len(suffix)], True))
        for stem, plural in candidates:
            if stem in g.nouns:
                english = g.nouns[stem]
                return _pluralize(english, g.english_plurals) if plural else english
            if not nouns_only and stem in g.words and g.words[stem]:
                return g.words[stem]
        return None

    def _compound(self, word: str) -> str | None:
        """Stadtpark → "city park": a known noun at the end and a known word before it."""
        key = word.casefold()
        g = self._glossary
        for split in range(3, len(key) - 2):
            left, right = key[:split], key[split:]
            head = self._lookup(right, nouns_only=True)
            if head is None:
                continue
            for link in _LINKING:
                stem = left[: -len(link)] if link and left.endswith(link) else left
                if link and not left.endswith(link):
                    continue
                for candidate in (stem, stem + "e"):
                    modifier = g.nouns.get(candidate) or g.words.get(candidate)
                    if modifier:
                        return f"{modifier} {head}"
        return None

    def translate_tokens(self, text: str) -> tuple[str, int]:
        """Return the English text and how many German tokens were recognised."""
        g = self._glossary
        tokens = _TOKEN.findall(text)
        folded = [t.casefold() for t in tokens]
        out: list[str] = []
        known = 0
        i = 0
        while i < len(tokens):
            for size in range(min(g.max_phrase, len(tokens) - i), 0, -1):
                phrase = tuple(folded[i : i + size])
                if phrase in g.phrases:
                    english = g.phrases[phrase]
                    if english:
                        out.append(english)
                    known += english.casefold() != " ".join(tokens[i : i + size]).casefold()
                    i += size
                    break
            else:
                token = tokens[i]
                english = self._lookup(token) if token[0].isalpha() else None
                if english is None and token[0].isalpha() and len(token) >= 6:
                    english = self._compound(token)
                if english is None:
                    out.append(token)
                else:
                    known += english.casefold() != token.casefold()
                    if english:
                        out.append(english)
                i += 1
        return _tidy(out), known

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
            text = part
        elif part in _NO_SPACE_BEFORE or part == "-" or text[-1] in _NO_SPACE_AFTER or \
                text.endswith("-"):
            text += part
        else:
            text += " " + part
    text = re.sub(r"\b(the|a)\s+(the|a)\b", r"\2", text, flags=re.IGNORECASE)  # "in the the"
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)  # a old → an old
    return re.sub(r"\s+", " ", text).strip()


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
