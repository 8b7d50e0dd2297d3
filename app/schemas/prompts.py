"""Request and response models for POST /prompt-expand and GET /styles, and the prompt
options every generation route shares (``style``, ``translate``, ``expand_prompt``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.base import RequestModel
from app.schemas.generation import MAX_SEED

ExpanderName = Literal["local", "openai", "gemini"]
MAX_SCENES = 50
MAX_PROMPTS = 50  # scenes x count


class Sampling(RequestModel):
    """Sampling of an LLM expander. The local expander uses them only with a local model."""

    temperature: float | None = Field(None, ge=0.0, le=2.0,
                                      description="Randomness; 0 is the most deterministic.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=1, le=500,
                              description="Top-k sampling (Gemini and local models; OpenAI "
                              "has none and ignores it).")
    max_tokens: int | None = Field(None, ge=16, le=8192,
                                   description="Most tokens the LLM may answer with.")


class PromptExpandRequest(Sampling):
    # The rule of _one_source, in the schema too (so generated clients know it).
    model_config = ConfigDict(json_schema_extra={
        "oneOf": [{"required": ["idea"]}, {"required": ["script"]}]})

    idea: str | None = Field(
        None, min_length=1, max_length=2000,
        description="A short wish in any language, e.g. 'ein See mitten in Olpe'.")
    script: str | None = Field(
        None, min_length=1, max_length=20000,
        description="Script-2-Prompt: one scene per non-empty line (blank-line separated "
        f"paragraphs count as one scene each when the script has blank lines); at most "
        f"{MAX_SCENES} scenes. Each scene gets `count` prompts (default 1).")
    language: str | None = Field(
        None, min_length=2, max_length=8, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z]{2,4})?$",
        description="Language of the idea (ISO 639-1, e.g. 'de'). Default: detected.")
    translate: bool = Field(True, description="Translate to English before expanding.")
    style: str | None = Field(None, max_length=64, description="A preset from GET /styles.")
    count: int | None = Field(None, ge=1, le=MAX_PROMPTS,
                              description="Prompts per idea (default 3) or per scene "
                              "(default 1).")
    seed: int | None = Field(None, ge=-1, le=MAX_SEED,
                             description="Seed of the first prompt; prompt i uses seed+i. "
                             "None or -1 draws one (returned).")
    provider: ExpanderName | None = Field(
        None, description="local (offline, default), openai or gemini. A remote expander "
        "that fails or answers malformed JSON twice falls back to local, unless "
        "`fallback` is false.")
    fallback: bool = Field(True, description="Fall back to the local expander when the "
                           "requested LLM fails. False: answer the provider's error instead.")

    @model_validator(mode="after")
    def _one_source(self) -> PromptExpandRequest:
        if (self.idea is None) == (self.script is None):
            raise ValueError("send exactly one of `idea` or `script`")
        return self


class ExpandedPrompt(BaseModel):
    """One prompt. The CSV export (``format=csv``) keeps the columns title, description,
    metatags, prompt."""

    scene: int = Field(..., description="Index of the scene (0 for a single idea).")
    title: str
    description: str
    metatags: list[str]
    prompt: str = Field(..., description="Fits CLIP's 75-token window.")
    negative_prompt: str
    language_detected: str = Field(..., description="'de', 'en', ... or 'unknown'.")
    translated_text: str | None = Field(
        ..., description="The English text that was expanded; null when nothing was translated.")
    translator: str | None = Field(
        None, description="Who translated it: glossary (offline), argos, libretranslate, "
        "google, or openai / gemini when the LLM expander's own translation was used.")
    provider: str = Field(..., description="Who wrote this prompt: local, openai or gemini.")
    seed: int
    style: str | None = None
    truncated: bool = Field(False, description="Terms were dropped to fit 75 CLIP tokens.")
    params: dict = Field(default_factory=dict,
                         description="Generation parameters the style recommends.")


class PromptResult(BaseModel):
    record_id: str
    provider: str = Field(..., description="Who answered (after any fallback).")
    requested_provider: str
    seed: int
    prompts: list[ExpandedPrompt]
    attempts: list[dict] = Field(default_factory=list,
                                 description="Each expander tried, in order, and how it went.")
    usage: dict | None = None


class StyleInfo(BaseModel):
    name: str
    description: str
    template: str = Field(..., description="{prompt} is replaced by the prompt.")
    negative_prompt: str
    domain: str
    params: dict


PROMPT_EXPAND_EXAMPLES = {
    "kiosk": {"summary": "A German visitor's wish, offline", "value": {
        "idea": "ein See mitten in Olpe", "style": "satellite-map", "count": 3, "seed": 1,
        "provider": "local"}},
    "blender": {"summary": "An English idea for a Blender render", "value": {
        "idea": "a lighthouse on a cliff at dusk", "style": "blender-render", "count": 5,
        "seed": 1}},
    "script": {"summary": "Script-2-Prompt: one prompt per scene", "value": {
        "script": "A ship leaves the harbour at dawn.\nA storm gathers over the open sea.\n"
                  "The ship reaches a lighthouse at night.", "style": "cinematic", "seed": 7}},
    "llm": {"summary": "Ask Gemini (falls back to local without a key)", "value": {
        "idea": "a castle on a hill", "provider": "gemini", "count": 2, "seed": 3,
        "temperature": 0.7, "top_p": 0.95, "top_k": 40, "max_tokens": 1024}},
}
