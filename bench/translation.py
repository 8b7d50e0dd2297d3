"""Kiosk wish translation: the share of wishes translated with no German word left over.

Not a timing benchmark: it measures how often each configured translator turns a visitor's
German wish into English without leaving a German word in it, on two hand-written lists
(``bench/data/translation_wishes.json``, the main list the glossary was grown against, and
``bench/data/translation_heldout.json``, written after the glossary work and measured
once), and lists the words left over.

    .venv/bin/python bench/translation.py                      # every list, every translator
    .venv/bin/python bench/translation.py --label before \\
        --translate-module /path/to/old/translate.py --out bench/results/translation_before.json
    .venv/bin/python bench/translation.py --llm openai         # also ask the real OpenAI
                                                               # expander (costs API calls)

"Fully translated" (see :class:`Checker`): the translator answered, and no word of its
output is (a) one of the wish's own words, (b) a word of the German lexicon (a hand list in
``bench/data/translation_check.json``, every source word of every list, and the
glossary's German keys), (c) an inflected form of a source word, or (d) a word with an
umlaut or ß. With ``--translate-module`` the lexicon also takes the app's glossary, so a
run of old code is checked exactly like a run of the current one. Comparisons are
case-insensitive and umlaut-insensitive (Grünflächen = Gruenflaechen = Grunflachen). A
wish's ``keep`` words (place names) and the global ``same_spelling`` words (Park, Hotel,
Wind, ...) may stay; German words that are common English words (``english_homographs``:
war, was, will, ...) are not in the lexicon, nor are glossary keys that the glossary
itself uses as English (solar, tram, New York).

"Fully translated" is not "good English": "a cable car on the mountain" passes, and so
would a word salad without German words. The bench prints every output that fails, and
the JSON keeps them, so read them as well as the share.

Translators: the offline glossary (always); Argos when ``argostranslate`` and a de→en
package are installed; LibreTranslate / Google when configured like the server
(``BILDWERK_TRANSLATE_ONLINE``, ``BILDWERK_LIBRETRANSLATE_URL``); the OpenAI / Gemini
expanders' ``translation`` field only with ``--llm`` and a key. The tests' fake LLM servers
echo the wish, so they are never measured: a figure from them would say nothing.

Prints a table and writes JSON to bench/results/translation.json (or --out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import write_result  # noqa: E402

DATA = ROOT / "bench" / "data"
LISTS = {"main": DATA / "translation_wishes.json", "heldout": DATA / "translation_heldout.json"}
CHECK = DATA / "translation_check.json"

_WORD = re.compile(r"[^\W\d_]+")
_ENDINGS = ("ern", "en", "em", "er", "es", "e", "n", "s")


# --------------------------------------------------------------------------- the measure

def variants(word: str) -> set[str]:
    """A word's comparable spellings: casefolded, ß as ss, umlauts as ae/oe/ue and as a/o/u
    (so Grünflächen, Gruenflaechen and Grunflachen meet)."""
    w = word.casefold().replace("ß", "ss")
    ae = w.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")
    plain = w.replace("ä", "a").replace("ö", "o").replace("ü", "u")
    return {ae, plain}


def stems(word: str) -> set[str]:
    """The word's variants without a German inflection ending (at least 5 letters left)."""
    out = set()
    for v in variants(word):
        out.add(v)
        for ending in _ENDINGS:
            if v.endswith(ending) and len(v) - len(ending) >= 5:
                out.add(v[: -len(ending)])
    return out


@dataclass
class Wish:
    de: str
    keep: tuple[str, ...] = ()


def load_list(path: Path) -> list[Wish]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Wish(w["de"], tuple(w.get("keep", ()))) for w in data["wishes"]]


@dataclass
class Checker:
    """Decides whether an output still holds German (see the module docstring)."""

    same_spelling: set[str]
    lexicon: set[str]  # variants of German words
    sizes: dict = field(default_factory=dict)

    @classmethod
    def build(cls, wish_lists: list[list[Wish]], glossary_words: set[str],
              glossary_english: set[str] = frozenset()) -> Checker:
        check = json.loads(CHECK.read_text(encoding="utf-8"))
        same = set().union(*(variants(w) for w in check["same_spelling"]))
        homographs = set().union(*(variants(w) for w in check["english_homographs"]))
        hand = set().union(*(variants(w) for w in check["german_lexicon"]))
        source: set[str] = set()
        source_words: set[str] = set()
        for wishes in wish_lists:
            for wish in wishes:
                kept = set().union(set(), *(variants(k) for k in wish.keep))
                for word in _WORD.findall(wish.de):
                    if not variants(word) & (kept | same):
                        source |= variants(word)
                        source_words.add(word.casefold())
        glossary = set().union(set(), *(variants(w) for w in glossary_words))
        glossary -= set().union(set(), *(variants(w) for w in glossary_english))
        lexicon = (hand | source | glossary) - homographs - same
        return cls(same, lexicon, {"hand_list": len(check["german_lexicon"]),
                                   "source_words": len(source_words),
                                   "glossary_keys": len(glossary_words),
                                   "lexicon_variants": len(lexicon)})

    def leftovers(self, wish: Wish, output: str | None) -> list[str]:
        """German words left in ``output`` (empty: fully translated)."""
        if output is None or not output.strip():
            return ["<no answer>"]
        kept = set().union(set(), *(variants(k) for k in wish.keep))
        allowed = kept | self.same_spelling
        source_words = [w for w in _WORD.findall(wish.de) if not variants(w) & allowed]
        source = set().union(set(), *(variants(w) for w in source_words))
        source_stems = set().union(set(), *(stems(w) for w in source_words))
        left = []
        for word in _WORD.findall(output):
            forms = variants(word)
            if forms & allowed:
                continue
            if (forms & source or forms & self.lexicon or stems(word) & source_stems
                    or set(word.casefold()) & set("äöüß")):
                left.append(word)
        return left


# --------------------------------------------------------------------------- translators

def load_translate(path: str | None) -> ModuleType:
    """The translation module to measure: the app's, or an older copy (``--translate-module``,
    e.g. the code before a change, with its ``data/glossary_de_en.json`` beside it)."""
    if not path:
        from app.prompting import translate

        return translate
    spec = importlib.util.spec_from_file_location("translate_under_test", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def glossary_keys(tr: ModuleType) -> tuple[set[str], set[str]]:
    """The German words the glossary knows (for the lexicon check), and the English words
    its translations use (never counted as German)."""
    g = tr._glossary()
    words = set(g.known_german) | set(getattr(g, "compound_parts", ()) or ())
    return {w for w in words if _WORD.fullmatch(w)}, set(g.known_english)


@dataclass
class Candidate:
    name: str
    status: str  # "measured" | "not installed" | "not configured" | "unreachable" | ...
    translate: object = None  # (wish text) -> (output or None, error or None)
    note: str = ""


def chain_candidate(tr: ModuleType, name: str, translators: list) -> Candidate:
    chain = tr.TranslationChain(translators)

    def run(text: str) -> tuple[str | None, str | None]:
        result = chain.translate(text, target="en")
        if not result.translated:
            return None, "; ".join(result.errors) or f"not translated (language "\
                f"{result.source_language})"
        return result.text, None

    return Candidate(name, "measured", run, note=" -> ".join(
        getattr(t, "name", type(t).__name__) for t in translators))


def candidates(tr: ModuleType, llm: list[str], probe: str) -> list[Candidate]:
    out = [chain_candidate(tr, "glossary", [tr.GlossaryTranslator()])]
    offline = tr.build_chain(online=False)
    names = [t.name for t in offline.translators]
    out.append(Candidate("offline chain", "same as glossary", note=" -> ".join(names))
               if names == ["glossary"] else chain_candidate(tr, "offline chain",
                                                               offline.translators))
    # Argos
    if tr.ArgosTranslator.available():
        out.append(chain_candidate(tr, "argos", [tr.ArgosTranslator()]))
    else:
        try:
            import argostranslate  # noqa: F401

            why = "argostranslate is installed but has no de→en package"
        except ImportError:
            why = "argostranslate is not installed"
        out.append(Candidate("argos", "not installed", note=why))
    # online, configured like the server
    settings = _settings()
    online = bool(settings and settings.translate_online)
    url = settings.libretranslate_url if settings else None
    key = settings.libretranslate_api_key.get_secret_value() if settings and \
        settings.libretranslate_api_key else None
    timeout = settings.translate_timeout_s if settings else 5.0
    for backend in ("libretranslate", "google"):
        configured = online and (bool(url) if backend == "libretranslate" else not url)
        if not configured:
            why = ("BILDWERK_TRANSLATE_ONLINE is off" if not online else
                   "BILDWERK_LIBRETRANSLATE_URL is not set" if backend == "libretranslate"
                   else "the server uses LibreTranslate, not Google")
            out.append(Candidate(backend, "not configured", note=why))
            continue
        translator = tr.DeepTranslatorTranslator(backend, url=url, api_key=key,
                                                 timeout=timeout, cooldown=0)
        try:
            translator.translate(probe, "de", "en")
        except tr.TranslatorUnavailable as exc:
            out.append(Candidate(backend, "unreachable", note=str(exc)[:200]))
            continue
        out.append(chain_candidate(tr, backend, [translator]))
    # the LLM expanders' translation field
    for provider in ("openai", "gemini"):
        out.append(_llm_candidate(provider, provider in llm, settings))
    return out


def _settings():
    try:
        from app.config import Settings

        return Settings()
    except Exception as exc:  # noqa: BLE001 - the bench reports it and goes on
        print(f"(settings could not be read: {exc}; online translators not measured)")
        return None


def _llm_candidate(provider: str, asked: bool, settings) -> Candidate:
    fake_note = ("only the tests' fake servers are reachable here, and a fake echoes the "
                 "wish: that would be no measure, so no figure is reported")
    key = getattr(settings, f"{provider}_api_key", None) if settings else None
    if key is None or not key.get_secret_value():
        env = "OPENAI_API_KEY" if provider == "openai" else "GEMINI_API_KEY"
        return Candidate(provider, "not configured", note=f"{env} is not set; {fake_note}")
    if not asked:
        return Candidate(provider, "not measured",
                         note=f"a key is set; pass --llm {provider} to spend API calls on it")
    from app.prompting.fewshot import FewShot
    from app.prompting.llm_calls import ExpanderError, SamplingOptions

    common = {"api_key": key.get_secret_value(), "timeout": settings.prompt_timeout_s,
              "retries": settings.provider_retries, "fewshot": FewShot()}
    if provider == "openai":
        from app.prompting.openai_expander import OpenAIExpander

        expander = OpenAIExpander(base_url=settings.openai_base_url,
                                  model=settings.openai_chat_model, **common)
    else:
        from app.prompting.gemini_expander import GeminiExpander

        expander = GeminiExpander(base_url=settings.gemini_base_url,
                                  model=settings.gemini_text_model, **common)

    def run(text: str) -> tuple[str | None, str | None]:
        try:
            answer = expander.expand(text, style=None, count=1, seed=0,
                                     sampling=SamplingOptions(temperature=0.0))
        except ExpanderError as exc:
            return None, f"{exc.kind}: {exc.reason}"
        translation = getattr(answer, "translation", None)
        return (translation, None) if translation else (None, "no translation field")

    return Candidate(provider, "measured", run,
                     note=f"{provider} expander, translation field of its answer")


# --------------------------------------------------------------------------- running

def measure(candidate: Candidate, wishes: list[Wish], checker: Checker) -> dict:
    full = 0
    left_words: Counter[str] = Counter()
    failures, errors = [], Counter()
    started = time.perf_counter()
    for wish in wishes:
        output, error = candidate.translate(wish.de)
        if error:
            errors[error[:120]] += 1
        left = checker.leftovers(wish, output)
        if left:
            left_words.update(w.casefold() for w in left if not w.startswith("<"))
            failures.append({"de": wish.de, "en": output, "left": left})
        else:
            full += 1
    return {
        "n": len(wishes), "fully_translated": full,
        "share": round(full / len(wishes), 4) if wishes else None,
        "leftover_words": dict(left_words.most_common()),
        "not_fully_translated": failures,
        "errors": dict(errors) or None,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", nargs="*", default=list(LISTS), choices=list(LISTS),
                        help="which wish lists to measure (default: all that exist)")
    parser.add_argument("--label", default="after",
                        help="what this run measures, e.g. before / after")
    parser.add_argument("--translate-module", default=None,
                        help="measure this translate.py instead of the app's (e.g. a copy "
                        "of the code before a change, with its data/ folder beside it)")
    parser.add_argument("--llm", nargs="*", default=[], choices=["openai", "gemini"],
                        help="also measure these LLM expanders (real API calls; needs keys)")
    parser.add_argument("--note", default="", help="a line saved with the result, e.g. what "
                        "--translate-module is")
    parser.add_argument("--show", type=int, default=5,
                        help="print this many untranslated examples per list")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        "translation.json")
    args = parser.parse_args(argv)

    tr = load_translate(args.translate_module)
    lists = {name: load_list(LISTS[name]) for name in args.lists if LISTS[name].exists()}
    missing = [name for name in args.lists if not LISTS[name].exists()]
    keys, english = glossary_keys(tr)
    if args.translate_module:  # the same lexicon as a run of the app's own module
        app_keys, app_english = glossary_keys(load_translate(None))
        keys, english = keys | app_keys, english | app_english
    checker = Checker.build(list(lists.values()), keys, english)
    probe = next(iter(lists.values()))[0].de
    result: dict = {
        "bench": "translation", "label": args.label,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "translate_module": args.translate_module or "app/prompting/translate.py",
        "note": args.note,
        "measure": ("fully translated = the translator answered and no output word is a "
                    "source word of the wish, a word of the German lexicon, an inflected "
                    "source word, or holds an umlaut/ß; case- and umlaut-insensitive; "
                    "per-wish 'keep' names and global same-spelling words may stay"),
        "lexicon": checker.sizes,
        "lists": {name: {"file": str(LISTS[name].relative_to(ROOT)), "n": len(w),
                         "held_out": name == "heldout"} for name, w in lists.items()},
        "missing_lists": missing,
        "translators": {},
    }
    for candidate in candidates(tr, args.llm, probe):
        entry: dict = {"status": candidate.status, "note": candidate.note}
        if candidate.translate is not None:
            for name, wishes in lists.items():
                entry[name] = measure(candidate, wishes, checker)
        result["translators"][candidate.name] = entry
    report(result, args.show)
    write_result(args.out, result)
    print(f"\nwrote {args.out}")
    return result


def report(result: dict, show: int) -> None:
    print(f"translation bench ({result['label']}): {result['translate_module']}")
    for name, info in result["lists"].items():
        kind = "HELD-OUT (written after the glossary work)" if info["held_out"] else \
            "main (the glossary was grown against it)"
        print(f"  list {name}: {info['n']} wishes, {kind}")
    for name in result["missing_lists"]:
        print(f"  list {name}: missing")
    print()
    for name, entry in result["translators"].items():
        figures = [f"{ln} {entry[ln]['fully_translated']}/{entry[ln]['n']} = "
                   f"{entry[ln]['share']:.0%}" for ln in result["lists"] if ln in entry]
        print(f"{name:15s} {entry['status']:15s} {'; '.join(figures) or entry['note']}")
    for name, entry in result["translators"].items():
        for ln in result["lists"]:
            if ln not in entry:
                continue
            data = entry[ln]
            top = ", ".join(f"{w} ({c})" for w, c in list(data["leftover_words"].items())[:15])
            print(f"\n{name} / {ln}: left over: {top or 'nothing'}")
            for failure in data["not_fully_translated"][:show]:
                print(f"  {failure['de']!r} -> {failure['en']!r}  left {failure['left']}")


if __name__ == "__main__":
    main()
