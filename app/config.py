"""Service settings, read from the environment (``BILDWERK_*``) and ``.env``.

Settings are built once in :func:`app.main.create_app` and injected everywhere else;
no module imports a global settings object, so tests can build two apps side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DeviceName = Literal["auto", "cuda", "cpu", "mps"]


class Settings(BaseSettings):
    """All runtime configuration. Every field is listed in ``.env.example``."""

    model_config = SettingsConfigDict(
        env_prefix="BILDWERK_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        env_ignore_empty=True, populate_by_name=True,
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Database, blobs and the embedded model.")
    models_dir: Path = Field(Path("./models"), description="Checkpoints to discover.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL. Default: SQLite (WAL) at <data_dir>/bildwerk.db."
    )

    # --- execution ---------------------------------------------------------------------
    device: DeviceName = Field("auto", description="auto picks CUDA (fp16) if present, else CPU.")
    default_model: str | None = Field(
        None, description="Model id used when a request names none. Default: first discovered "
        "model, else the embedded one."
    )
    queue_max: int = Field(16, ge=1, description="Jobs waiting per device before 429.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with a 429.")
    sync_timeout_s: float = Field(
        600.0, gt=0, description="How long a synchronous request waits for its job."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU.")

    # --- limits --------------------------------------------------------------------------
    max_width: int = Field(2048, ge=64, description="Largest width (and height) accepted.")
    max_pixels: int = Field(2048 * 2048, ge=64 * 64, description="Largest input image area.")
    max_steps: int = Field(150, ge=1)
    max_images: int = Field(8, ge=1, description="Largest num_images per request.")
    max_frames: int = Field(120, ge=1, description="Largest img2seq frame count.")
    max_batch_pixels: int = Field(
        2048 * 2048, ge=64 * 64,
        description="Largest num_images x width x height of one request (work per step).")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)

    hf_models: str = Field(
        "", description="Comma-separated Hugging Face repo ids to offer as models (diffusers "
        "layout). With HF_HUB_OFFLINE=1 only cached ones are used.")
    hf_cache_dir: Path | None = Field(None, description="Hub cache. Default: huggingface_hub's.")

    # --- remote providers (keys come from the environment or .env, never logged) ------
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"))
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"))
    openai_model: str = Field("dall-e-2", description="dall-e-2, dall-e-3 or gpt-image-1.")
    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("HF_TOKEN",
                                                                           "hf_token"))
    hf_inference_url: str | None = Field(
        None, description="Root of the hf-inference API (requests go to <root>/models/<repo>). "
        "Default: Hugging Face's router.")
    hf_inference_model: str = "stabilityai/stable-diffusion-xl-base-1.0"
    hf_retry_black: bool = Field(False, description="Retry black (filtered) images with "
                                 "another seed.")
    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GEMINI_API_KEY", "gemini_api_key"))
    gemini_base_url: str | None = None
    gemini_imagen_model: str = "imagen-4.0-generate-001"
    gemini_image_model: str = "gemini-2.5-flash-image"
    provider_timeout_s: float = Field(120.0, gt=0)
    provider_retries: int = Field(2, ge=0, le=10)
    provider_chains: dict[str, list[str]] = Field(
        default_factory=lambda: {"default": ["local"]},
        description='Named fallback chains, JSON: {"default": ["local"], "kiosk": ["local", '
        '"openai"]}. A request names a provider or a chain in "provider".')

    # --- prompt expansion and translation ----------------------------------------------
    prompt_provider: str = Field(
        "local", description="Default expander for /prompt-expand and expand_prompt: local, "
        "openai or gemini. A remote expander that fails falls back to local.")
    openai_chat_model: str = Field("gpt-4o-mini", description="Chat model for prompt "
                                   "expansion (structured JSON output).")
    gemini_text_model: str = Field("gemini-2.5-flash", description="Gemini model for prompt "
                                   "expansion (response JSON schema).")
    prompt_timeout_s: float = Field(30.0, gt=0, description="Per LLM call of an expansion.")
    prompt_fewshot_dir: Path | None = Field(
        None, description="Folder of few-shot JSONL files for the LLM expanders. Default: "
        "the shipped app/prompting/data/fewshot.")
    prompt_styles_file: Path | None = Field(
        None, description="Style presets JSON. Default: the shipped "
        "app/prompting/data/styles.json.")
    prompt_model_dir: Path | None = Field(
        None, description="A local transformers causal LM (e.g. a MagicPrompt-style GPT-2) on "
        "disk; when set, the local expander lets it continue the idea. Never downloaded.")
    translate_online: bool = Field(
        False, description="Try an online translator (LibreTranslate at "
        "BILDWERK_LIBRETRANSLATE_URL, else Google) before the offline ones.")
    libretranslate_url: str | None = Field(None, description="LibreTranslate server root.")
    libretranslate_api_key: SecretStr | None = None
    translate_timeout_s: float = Field(5.0, gt=0, description="Per online translation call.")
    kiosk_translate: bool = Field(True, description="POST /inpainting/ translates the "
                                  "visitor's wish to English first, as the kiosk server did.")
    kiosk_expand: bool = Field(False, description="POST /inpainting/ also expands the wish.")
    kiosk_style: str | None = Field(None, description="Style preset applied to every "
                                    "POST /inpainting/ wish, e.g. satellite-map.")

    # --- model memory ------------------------------------------------------------------
    memory_budget_mb: int | None = Field(
        None, ge=1, description="Memory for resident models: VRAM on CUDA, RAM on the CPU. "
        "Default: 90% of VRAM, or half the RAM. Least-recently-used models are evicted.")
    max_resident_loras: int = Field(8, ge=1, description="LoRA adapters kept loaded per model.")

    # --- embedded default model ---------------------------------------------------------
    embedded_model_id: str = "bildwerk-tiny"

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_pixels < 64 * 64:
            raise ValueError("BILDWERK_MAX_PIXELS must allow at least 64x64")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bildwerk.db').resolve()}"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def embedded_dir(self) -> Path:
        return self.data_dir / "embedded"
