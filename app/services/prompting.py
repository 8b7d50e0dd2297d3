"""Prompt expansion and translation: POST /prompt-expand, GET /styles, and the ``style`` /
``translate`` / ``expand_prompt`` options of the generation routes.

expand (POST /prompt-expand)::

    check style -> record "running" -> per scene: translate offline (never fails)
      -> requested expander (openai / gemini), asked with the wish as typed when it is not
         English: its answer's "translation" becomes the translated wish
      -> on failure: local expander, on the offline translation
      -> record "succeeded" (result = the prompts and each scene's translation,
         attempts = every expander tried)
      (an error is recorded "failed" and answered with the envelope)

prepare (generation routes)::

    typed -> translated (if asked) -> expanded (if asked; first expansion; an LLM
      expander translates the typed prompt itself, as above)
      -> styled (template + negative) -> the prompt the pipeline gets

The record of a generation keeps the prompt as typed, as translated and as expanded, and
which translator answered (``translator``: glossary, argos, libretranslate, google, or
openai / gemini when the LLM's translation was used; the offline one is kept beside it as
``offline_translation``).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from app.config import Settings
from app.errors import (
    BildwerkError,
    GenerationFailed,
    InvalidInput,
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    ProviderUnavailable,
)
from app.persistence.records import NewRecord, RecordRepository
from app.prompting.llm_calls import ExpanderError, LLMAnswer, SamplingOptions
from app.prompting.local_expander import Expansion, expand_locally
from app.prompting.styles import StyleBook, StylePreset
from app.prompting.translate import Translation, TranslationChain
from app.request_limits import caller_key, check_prompt_lengths
from app.schemas.generation import MAX_SEED
from app.schemas.prompts import MAX_PROMPTS, MAX_SCENES, PromptExpandRequest, PromptResult

log = logging.getLogger("bildwerk.prompts")

LOCAL = "local"
ENDPOINT = "prompt-expand"


class LLMExpander(Protocol):
    name: str

    def available(self) -> tuple[bool, str | None]: ...

    def expand(self, idea: str, *, style: StylePreset | None, count: int, seed: int,
               sampling: SamplingOptions) -> LLMAnswer: ...


@dataclass
class SceneResult:
    scene: int
    translation: Translation  # the one used: the LLM's or the offline chain's
    english: str
    expansions: list[Expansion]
    offline: Translation | None = None  # the offline chain's, when the LLM's replaced it

    def record(self) -> dict:
        """What the record keeps of this scene's translation."""
        tr = self.translation
        out = {"scene": self.scene, "language": tr.source_language,
               "translator": tr.translator if tr.translated else None,
               "text": self.english if tr.translated else None}
        if self.offline is not None:
            out["offline"] = {"translator": self.offline.translator,
                              "text": self.offline.text if self.offline.translated else None}
        return out


@dataclass
class Outcome:
    """Who answered a set of expansions, and everything tried on the way."""

    expansions: list[Expansion]
    provider: str
    attempts: list[dict] = field(default_factory=list)
    usage: dict | None = None
    translation: str | None = None  # an LLM expander's English of the wish, if it gave one


def llm_translation(typed: str, offline: Translation, outcome: Outcome) -> Translation | None:
    """The LLM's translation of ``typed`` as a :class:`Translation` (translator = the
    provider), or None when the LLM did not answer or gave no translation that differs from
    the typed text."""
    text = outcome.translation
    if outcome.provider == LOCAL or not text or \
            " ".join(text.split()).casefold() == " ".join(typed.split()).casefold():
        return None
    return Translation(text, offline.source_language, True, outcome.provider, offline.errors)


@dataclass
class PreparedPrompt:
    """A generation request's prompt at every stage; ``prompt`` is what the pipeline gets."""

    typed: str
    prompt: str
    negative_prompt: str
    translated: str | None = None  # set when a translator changed the text
    expanded: str | None = None  # set when the prompt was expanded
    notes: dict = field(default_factory=dict)  # language, translator, expander, style
    style_params: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What a generation result and record say about the prompt's way."""
        return {"typed": self.typed, "translated": self.translated,
                "expanded": self.expanded, "used": self.prompt, **self.notes}


@dataclass
class ScheduledPrompt(PreparedPrompt):
    """img2seq: a prepared prompt per keyframe; the record joins them "0: ... | 7: ..."."""

    keyframes: dict[int, str] = field(default_factory=dict)

    @classmethod
    def combine(cls, parts: dict[int, PreparedPrompt], single: bool) -> ScheduledPrompt:
        first = next(iter(parts.values()))

        def joined(stage: str) -> str | None:
            if all(getattr(p, stage) is None for p in parts.values()):
                return None
            if single:
                return getattr(first, stage)
            return " | ".join(f"{k}: {getattr(p, stage) or p.typed}" for k, p in parts.items())

        return cls(typed=joined("typed") or "", prompt=joined("prompt") or "",
                   negative_prompt=first.negative_prompt, translated=joined("translated"),
                   expanded=joined("expanded"), notes=dict(first.notes),
                   style_params=first.style_params,
                   keyframes={k: p.prompt for k, p in parts.items()})


def split_script(script: str) -> list[str]:
    """Scenes of a script: blank-line separated paragraphs when there are blank lines,
    otherwise one scene per non-empty line."""
    text = script.replace("\r\n", "\n").strip()
    parts = re.split(r"\n\s*\n", text) if re.search(r"\n\s*\n", text) else text.split("\n")
    scenes = [" ".join(p.split()) for p in parts]
    return [s for s in scenes if s]


class PromptService:
    def __init__(self, settings: Settings, styles: StyleBook, translator: TranslationChain,
                 records: RecordRepository, expanders: dict[str, LLMExpander],
                 local_model: Any = None, owners: Any = None) -> None:
        self.settings = settings
        # app.jobs.owners.OwnerLimit: an expansion in progress counts against its caller's
        # BILDWERK_MAX_QUEUED_PER_KEY like a job (None: not counted, e.g. the CLI)
        self.owners = owners
        self.styles = styles
        self.translator = translator
        self.records = records
        self.expanders = expanders
        self.local_model = local_model

    # -- styles ---------------------------------------------------------------------------
    def list_styles(self) -> list[StylePreset]:
        return [self.styles.get(name) for name in self.styles.names()]

    # -- POST /prompt-expand (threadpool thread) ------------------------------------------
    def expand(self, req: PromptExpandRequest, client: dict | None = None) -> PromptResult:
        check_prompt_lengths(req, self.settings.max_prompt_chars)  # idea; script 10x
        if self.owners is None:
            return self._expand(req, client)
        client = client or {}
        with self.owners.holding(caller_key(client.get("key_id"), client.get("host"))):
            return self._expand(req, client)

    def _expand(self, req: PromptExpandRequest, client: dict | None) -> PromptResult:
        style = self.styles.get(req.style) if req.style else None
        scenes = [req.idea.strip()] if req.idea is not None else split_script(req.script or "")
        if not scenes or not all(scenes):
            raise InvalidInput("the idea or script is empty", param="idea")
        if len(scenes) > MAX_SCENES:
            raise InvalidInput(f"a script may have at most {MAX_SCENES} scenes "
                               f"(got {len(scenes)})", param="script")
        count = req.count or (3 if req.idea is not None else 1)
        if count * len(scenes) > MAX_PROMPTS:
            raise InvalidInput(f"scenes x count must be at most {MAX_PROMPTS} "
                               f"({len(scenes)} x {count})", param="count")
        requested = req.provider or self.settings.prompt_provider
        seed = req.seed if req.seed is not None and req.seed >= 0 else secrets.randbelow(
            MAX_SEED)
        record_id = str(uuid.uuid4())
        params = req.model_dump(exclude={"idea", "script"}) | {
            "seed": seed, "count": count, "scenes": len(scenes)}
        self.records.create(NewRecord(
            id=record_id, job_id=str(uuid.uuid4()), endpoint=ENDPOINT, provider=requested,
            model=None, prompt=req.idea if req.idea is not None else req.script or "",
            negative_prompt=None, params=params, client=client))
        self.records.mark_running(record_id)
        started = time.perf_counter()
        try:
            results, outcome = self._expand_scenes(req, scenes, style, count, seed, requested)
        except BildwerkError as exc:
            self.records.finish(record_id, status="failed", error_code=exc.code,
                                error_message=exc.message,
                                timings={"total_s": round(time.perf_counter() - started, 4)})
            raise
        except Exception as exc:
            log.exception("prompt expansion failed")
            err = GenerationFailed(f"prompt expansion failed: {exc}")
            self.records.finish(record_id, status="failed", error_code=err.code,
                                error_message=err.message)
            raise err from exc
        prompts = [self._prompt_out(r, exp) for r in results for exp in r.expansions]
        translated = [r.english for r in results if r.translation.translated]
        self.records.finish(
            record_id, status="succeeded", provider=outcome.provider,
            seeds=[p["seed"] for p in prompts], attempts=outcome.attempts, usage=outcome.usage,
            result={"prompts": prompts, "translations": [r.record() for r in results]},
            prompt_translated="\n".join(translated) if translated else None,
            prompt_expanded="\n".join(p["prompt"] for p in prompts),
            timings={"total_s": round(time.perf_counter() - started, 4)})
        return PromptResult(record_id=record_id, provider=outcome.provider,
                            requested_provider=requested, seed=seed, prompts=prompts,
                            attempts=outcome.attempts, usage=outcome.usage)

    def _expand_scenes(self, req: PromptExpandRequest, scenes: list[str],
                       style: StylePreset | None, count: int, seed: int,
                       requested: str) -> tuple[list[SceneResult], Outcome]:
        sampling = SamplingOptions(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                            max_tokens=req.max_tokens)
        results: list[SceneResult] = []
        providers: list[str] = []
        attempts: list[dict] = []
        usage: dict[str, float] = {}
        for i, scene in enumerate(scenes):
            translation = self._translate(scene, req.language, req.translate)
            english = translation.text if translation.translated else scene
            # an LLM translates the wish itself (its answer's "translation"); the local
            # expander, also as the fallback, gets the offline translation
            llm_translates = requested != LOCAL and req.translate and \
                translation.source_language != "en"
            outcome = self.run_expanders(scene if llm_translates else english, style=style,
                                         count=count, seed=(seed + i * count) % (MAX_SEED + 1),
                                         provider=requested, sampling=sampling,
                                         fallback=req.fallback, local_idea=english)
            offline = None
            llm = llm_translation(scene, translation, outcome) if llm_translates else None
            if llm is not None:
                offline, translation, english = translation, llm, llm.text
            for attempt in outcome.attempts:
                attempts.append({"scene": i, **attempt})
            for key, value in (outcome.usage or {}).items():
                if isinstance(value, int | float):
                    usage[key] = usage.get(key, 0) + value
            providers.append(outcome.provider)
            results.append(SceneResult(i, translation, english, outcome.expansions, offline))
            if any(a.get("kind") == "unavailable" for a in outcome.attempts):
                requested = LOCAL  # down or timing out: do not wait for it scene after scene
        answered = providers[0] if len(set(providers)) == 1 else "+".join(
            dict.fromkeys(providers))
        return results, Outcome([], answered, attempts, usage or None)

    @staticmethod
    def _prompt_out(result: SceneResult, exp: Expansion) -> dict:
        data = asdict(exp)
        return {
            "scene": result.scene, "title": data["title"],
            "description": data["description"], "metatags": data["metatags"],
            "prompt": data["prompt"], "negative_prompt": data["negative_prompt"],
            "language_detected": result.translation.source_language,
            "translated_text": result.english if result.translation.translated else None,
            "translator": result.translation.translator if result.translation.translated
            else None,
            "provider": data["provider"], "seed": data["seed"], "style": data["style"],
            "truncated": data["truncated"], "params": data["params"],
        }

    # -- shared by both routes --------------------------------------------------------------
    def _translate(self, text: str, language: str | None, enabled: bool) -> Translation:
        if not enabled:
            return Translation(text, (language or "unknown").lower(), False, None)
        return self.translator.translate(text, target="en",
                                         source=language.lower() if language else None)

    def run_expanders(self, idea: str, *, style: StylePreset | None, count: int, seed: int,
                      provider: str, sampling: SamplingOptions, fallback: bool = True,
                      local_idea: str | None = None) -> Outcome:
        """The requested expander, then the local one; every attempt is recorded.

        ``idea`` goes to the LLM expander (the wish as typed, when it is to translate it);
        ``local_idea`` (default ``idea``) to the local one: the offline translation."""
        attempts: list[dict] = []
        if provider != LOCAL:
            expander = self.expanders.get(provider)
            if expander is None:
                raise InvalidInput(f"unknown prompt expander {provider!r}", param="provider")
            started = time.perf_counter()
            ok, why = expander.available()
            try:
                if not ok:
                    raise ExpanderError("unavailable", why or "not configured")
                answer = expander.expand(idea, style=style, count=count, seed=seed,
                                         sampling=sampling)
            except ExpanderError as exc:
                attempts.append({"provider": provider, "status": "failed", "kind": exc.kind,
                                 "error_message": exc.reason, "calls": exc.attempts,
                                 "seconds": round(time.perf_counter() - started, 4)})
                if not fallback:
                    raise _as_http_error(provider, exc, ok) from exc
                log.warning("%s expander failed (%s: %s); using the local expander",
                            provider, exc.kind, exc.reason)
            else:
                attempts.append({"provider": provider, "status": "succeeded",
                                 "model": answer.model, "calls": answer.calls,
                                 "repaired": answer.repaired,
                                 "translation": answer.translation is not None,
                                 "seconds": round(time.perf_counter() - started, 4)})
                return Outcome(answer.expansions, provider, attempts, answer.usage,
                               answer.translation)
        started = time.perf_counter()
        expansions = self._local(local_idea or idea, style, count, seed, sampling)
        attempts.append({"provider": LOCAL, "status": "succeeded",
                         "seconds": round(time.perf_counter() - started, 4)})
        return Outcome(expansions, LOCAL, attempts)

    def _local(self, idea: str, style: StylePreset | None, count: int, seed: int,
               sampling: SamplingOptions) -> list[Expansion]:
        kwargs: dict[str, Any] = {}
        if self.local_model is not None:
            kwargs = {"model": self.local_model, "temperature": sampling.temperature,
                      "top_p": sampling.top_p, "top_k": sampling.top_k,
                      "max_tokens": sampling.max_tokens}
        return expand_locally(idea, style=style.name if style else None, count=count,
                              seed=seed, styles=self.styles, **kwargs)

    # -- generation routes (threadpool thread, before the job is queued) --------------------
    def with_style_params(self, req):
        """The request with its style's recommended steps/guidance for fields the client did
        not set. An unknown style is a 422."""
        if not getattr(req, "style", None):
            return req
        preset = self.styles.get(req.style)
        update = {k: v for k, v in preset.params.items()
                  if k in type(req).model_fields and k not in req.model_fields_set}
        return req.model_copy(update=update) if update else req

    def prepare(self, prompt: str, negative_prompt: str, *, style: str | None,
                translate: bool, expand: bool, seed: int) -> PreparedPrompt:
        """Translate, expand and style a generation prompt. Never fails on translation or
        on an LLM; an unknown style is a 422."""
        preset = self.styles.get(style) if style else None
        out = PreparedPrompt(typed=prompt, prompt=prompt, negative_prompt=negative_prompt)
        tr: Translation | None = None
        if translate:
            tr = self._translate(prompt, None, True)
            out.notes["language_detected"] = tr.source_language
            if tr.translated:
                out.translated = out.prompt = tr.text
                out.notes["translator"] = tr.translator
        if expand:
            provider = self.settings.prompt_provider
            llm_translates = tr is not None and provider != LOCAL and tr.source_language != "en"
            outcome = self.run_expanders(prompt if llm_translates else out.prompt,
                                         style=preset, count=1, seed=seed, provider=provider,
                                         sampling=SamplingOptions(), local_idea=out.prompt)
            llm = llm_translation(prompt, tr, outcome) if llm_translates and tr else None
            if llm is not None:  # the LLM's translation replaces the offline one
                if tr is not None and tr.translated:
                    out.notes["offline_translation"] = {"translator": tr.translator,
                                                        "text": tr.text}
                out.translated = llm.text
                out.notes["translator"] = llm.translator
            first = outcome.expansions[0]
            out.expanded = out.prompt = first.prompt
            if not negative_prompt.strip():
                out.negative_prompt = first.negative_prompt
            out.notes["expander"] = outcome.provider
            out.notes["expansion_attempts"] = outcome.attempts
        if preset is not None:
            if not expand:  # an expansion with a style already carries the style's terms
                out.prompt, out.negative_prompt = self.styles.apply(
                    out.prompt, out.negative_prompt, preset.name)
            out.notes["style"] = preset.name
            out.style_params = dict(preset.params)
        return out


def _as_http_error(provider: str, exc: ExpanderError, configured: bool) -> BildwerkError:
    if not configured:
        return ProviderUnavailable(f"{provider}: {exc.reason}", param="provider")
    message = f"{provider} prompt expansion failed: {exc.reason}"
    if exc.kind == "refused":
        return ProviderRefused(message, param="provider")
    if "timed out" in exc.reason.lower() or "timeout" in exc.reason.lower():
        return ProviderTimeout(message, param="provider")
    return ProviderError(message, param="provider")


def build_prompt_service(settings: Settings, records: RecordRepository,
                         owners: Any = None) -> PromptService:
    """Styles, the translation chain, the LLM expanders and the optional local model, as
    the settings say."""
    from app.prompting.fewshot import FewShot
    from app.prompting.gemini_expander import GeminiExpander
    from app.prompting.local_model import LocalPromptModel
    from app.prompting.openai_expander import OpenAIExpander
    from app.prompting.translate import build_chain

    def secret(value) -> str | None:
        return value.get_secret_value() if value is not None else None

    styles = StyleBook.load(settings.prompt_styles_file)
    if settings.kiosk_style and settings.kiosk_style not in styles:
        raise ValueError(f"BILDWERK_KIOSK_STYLE={settings.kiosk_style!r} is not a style; "
                         f"available: {', '.join(styles.names())}")
    fewshot = FewShot(settings.prompt_fewshot_dir) if settings.prompt_fewshot_dir \
        else FewShot()
    common = {"timeout": settings.prompt_timeout_s, "retries": settings.provider_retries,
              "fewshot": fewshot}
    expanders: dict[str, LLMExpander] = {
        "openai": OpenAIExpander(api_key=secret(settings.openai_api_key),
                                 base_url=settings.openai_base_url,
                                 model=settings.openai_chat_model, **common),
        "gemini": GeminiExpander(api_key=secret(settings.gemini_api_key),
                                 base_url=settings.gemini_base_url,
                                 model=settings.gemini_text_model, **common),
    }
    translator = build_chain(settings.translate_online, settings.libretranslate_url,
                             secret(settings.libretranslate_api_key),
                             timeout=settings.translate_timeout_s)
    return PromptService(settings, styles, translator, records, expanders,
                         local_model=LocalPromptModel.from_dir(settings.prompt_model_dir),
                         owners=owners)
