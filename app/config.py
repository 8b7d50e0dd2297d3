"""Service settings, read from the environment (``BILDWERK_*``) and ``.env``.

Settings are built once in :func:`app.main.create_app` and injected everywhere else;
no module imports a global settings object, so tests can build two apps side by side.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DeviceName = Literal["auto", "cuda", "cpu", "mps"]
AuthMode = Literal["auto", "keys", "open"]


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
    min_free_disk_mb: int = Field(
        512, ge=0, description="GET /ready answers 503 (check 'disk' false) while the file "
        "system of the data dir has less free space than this, in MB. 0: no disk check.")

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
    max_batch: int = Field(
        0, ge=0, le=64, description="Most images the device worker runs in one pipeline "
        "call when it batches compatible queued txt2img jobs (same model, size, steps, "
        "scheduler, guidance, LoRAs, VAE, clip_skip). 0 (auto): BILDWERK_MAX_IMAGES, at most "
        "8; 1: no batching. A batch also stays within BILDWERK_MAX_BATCH_PIXELS, the memory "
        "bound of one request. docs/performance.md, \"Batching\".")
    batch_wait_ms: float = Field(
        20.0, ge=0, le=5000, description="How long the device worker waits for more "
        "compatible jobs to join a batch; only while the previous run was a batch, so a "
        "lone request on an idle server never waits.")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads on CPU. Default: chosen per job by "
        "the model's size (1 for small models like the embedded one, every core for large "
        "ones; app/pipelines/fast_path.py).")

    # --- the fast path (app/pipelines/fast_path.py; docs/performance.md) -----------------
    cpu_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="Weights' dtype on the CPU. bf16 needs native support "
        "(AVX512-BF16 or AMX; refused at start otherwise) and changes pixels.")
    cuda_dtype: Literal["fp16", "bf16"] = Field("fp16", description="Weights' dtype on CUDA.")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="channels_last memory format for the UNet and VAE. auto: on "
        "CUDA only (on the CPU it changes pixels slightly).")
    compile: Literal["off", "default", "max-autotune"] = Field(
        "off", description="torch.compile the UNet, warmed up at load (slow the first time; "
        "the cache is kept in <data_dir>/compile-cache).")
    taesd_previews: Literal["auto", "on", "off"] = Field(
        "auto", description="Decode step previews with TAESD (models/taesd, taesdxl) when "
        "it is there. auto: on CUDA only; on the CPU a TAESD preview costs about half a step "
        "(bench/fast_path.py), the linear map 2%.")
    vae_tile_above: int = Field(
        1536, ge=0, description="CUDA: decode with VAE tiling when an image side exceeds "
        "this many pixels (bounded memory for large images). 0: never.")
    job_timeout_s: float = Field(
        3600.0, gt=0, description="Longest a job may run (from its start, queue time not "
        "counted). A job still running then is stopped at its next denoising step (or its "
        "next frame, or after its model load) and ends failed with job_time_limit (504); "
        "frames a sequence finished before stay recorded. A remote provider call is bounded "
        "by BILDWERK_PROVIDER_TIMEOUT_S instead.")

    # --- access -------------------------------------------------------------------------
    auth_mode: AuthMode = Field(
        "auto", description="auto: while no API key exists only loopback clients may call "
        "without one, once one exists every caller needs a key; keys: a key is always "
        "required, loopback included; open: no key needed from anywhere (a key sent is still "
        "checked). Keys: `bildwerk keys create NAME --scope generate`.")
    loopback_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["generate"], description="In auth mode auto, once API keys "
        "exist: the scopes a loopback caller (127.0.0.1, ::1) gets without a key, e.g. the "
        "museum kiosk's backend on the same host, which cannot send one. Comma-separated "
        "(generate, read, admin); none: no scope, a loopback caller then needs a key like "
        "everyone else. Behind a reverse proxy on this host every client looks like "
        "loopback: set it to none there, or make the proxy forward the client address.")

    # --- limits --------------------------------------------------------------------------
    max_width: int = Field(2048, ge=64, description="Largest width (and height) accepted.")
    max_pixels: int = Field(2048 * 2048, ge=64 * 64,
                            description="Largest area (width x height) a model processes.")
    max_input_side: int = Field(
        8192, ge=64, description="Largest side of an uploaded image. Separate from "
        "max_width/max_pixels, which bound what is processed: /inpaint with "
        "inpaint_area=masked (and /inpainting/) processes only the crop around the mask, so "
        "a larger map is accepted as long as that crop fits.")
    max_input_pixels: int = Field(
        8192 * 8192, ge=64 * 64, description="Largest area of an uploaded image (Pillow's "
        "decompression-bomb guard stays on beneath it).")
    max_steps: int = Field(150, ge=1)
    max_images: int = Field(8, ge=1, description="Largest num_images per request.")
    max_frames: int = Field(120, ge=1, description="Largest img2seq frame count.")
    max_batch_pixels: int = Field(
        2048 * 2048, ge=64 * 64,
        description="Largest num_images x width x height of one request (work per step).")
    max_sequence_work: int = Field(
        120 * 1024 * 1024 * 50, ge=64 * 64,
        description="Largest frames x width x height x steps of one /img2seq request (the "
        "work of the whole sequence; over it: 413). Default: 120 frames of 1024x1024 at 50 "
        "steps, so 120 frames of 512x512 pass even at 150 steps, and 120 of 2048x2048 do not "
        "at any step count.")
    max_canvas_pixels: int = Field(
        8192 * 8192, ge=64 * 64,
        description="Largest canvas (width x height) of an /img2seq strip or sheet package "
        "(a strip is frames x width wide, a sheet about sqrt(frames) frames each way); over "
        "it: 413 before the job is queued. Default: 8192x8192, which fits 120 frames of "
        "512x512.")
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body of the image routes "
        "(/inpaint, /img2seq, /inpainting/); 413 beyond it.")
    max_json_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body of every other route "
        "(/txt2img, /prompt-expand, feedback, model routes); 413 beyond it.")
    body_timeout_s: float = Field(
        30.0, gt=0, description="The whole request body must arrive within this time; a "
        "slower (trickling) client gets 408 and its connection is freed.")
    max_json_depth: int = Field(16, ge=2, description="Deepest nesting of lists/objects in a "
                                "JSON body or form field (422 beyond it).")
    max_json_items: int = Field(
        1024, ge=16, description="Most entries of one JSON list or object in a body (422 "
        "beyond it), checked on the raw bytes before parsing.")
    max_json_values: int = Field(
        20_000, ge=100, description="Most JSON values in one body, all levels together "
        "(422 beyond it).")
    max_prompt_chars: int = Field(
        2000, ge=1, description="Longest prompt, negative prompt, prompt_schedule entry or "
        "/prompt-expand idea, in characters (a /prompt-expand script may be 10x longer). "
        "The request schemas cap prompts at 4000 whatever this says.")
    max_queued_per_key: int = Field(
        4, ge=0, description="Jobs one caller (API key, else client host) may have queued or "
        "running at once; the next is answered 429 too_many_jobs. 0: no limit.")
    rate_limit: str = Field(
        "", description='Requests per caller (API key, else client host) to the generation '
        'routes and /prompt-expand, e.g. "60/minute" or "5/second;200/hour"; over it: 429 '
        "rate_limited with Retry-After. Empty: off.")
    prompt_rate_limit: str = Field(
        "30/minute", description="Requests per caller to POST /prompt-expand, on top of "
        "BILDWERK_RATE_LIMIT: an expansion may call a paid LLM and is recorded, so it is "
        "limited by default. Empty: off.")
    rate_limit_storage: str = Field(
        "memory://", description="Where the rate limiter counts: memory:// (this process) "
        "or redis://host:6379/0 (shared by every instance).")

    # --- browsers and shutdown -----------------------------------------------------------
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins whose pages may call the API from a "
        'browser (CORS), JSON (["https://kiosk.example"]) or comma-separated. Empty: no CORS '
        'headers at all; "*": any origin.')
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM/SIGINT: new work is refused (503) at once and "
        "running jobs get this long to finish; then they and every queued job are stopped "
        "and recorded 'interrupted'.")

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
    kiosk_page: bool = Field(False, description="Serve the visitor page of clients/kiosk/ "
                             "at /kiosk/ (a map to paint on, a wish, POST /inpaint).")
    kiosk_map: Path | None = Field(
        None, description="The map image the kiosk page shows (PNG or JPEG). Default: the "
        "generated sample map shipped in clients/kiosk/.")
    kiosk_idle_s: float = Field(90.0, ge=5, description="The kiosk page goes back to its "
                                "attract screen after this many seconds without a touch.")

    # --- model memory ------------------------------------------------------------------
    memory_budget_mb: int | None = Field(
        None, ge=1, description="Memory for resident models: VRAM on CUDA, RAM on the CPU. "
        "Default: 90% of VRAM, or half the RAM. Least-recently-used models are evicted.")
    max_resident_loras: int = Field(8, ge=1, description="LoRA adapters kept loaded per model.")

    # --- upscaling (POST /upscale; model files in BILDWERK_MODELS_DIR/upscalers/) ---------
    upscale_tile_size: int = Field(
        192, ge=0, description="Largest tile side, in input pixels, an upscaler model sees at "
        "once (memory stays bounded on large images); 0 = the whole image at once.")
    upscale_tile_overlap: int = Field(16, ge=0, description="Context pixels around a tile.")
    upscale_max_output_pixels: int = Field(
        4096 * 4096, ge=64 * 64, description="Largest upscaled image area.")
    upscale_models_cached: int = Field(2, ge=1, description="Upscaler models kept loaded.")

    # --- blob store (app/persistence/blobs.py) ------------------------------------------
    blob_store: str | None = Field(
        None, description="Where inputs and outputs are stored, content-addressed: "
        "file:///abs/path (a local folder) or s3://bucket/prefix (any S3-compatible store: "
        "AWS, MinIO, R2, ...; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_REGION). Default: the folder <data_dir>/blobs.")
    s3_endpoint_url: str | None = Field(
        None, description="The S3 endpoint for s3:// blob stores other than AWS, e.g. "
        "http://127.0.0.1:9000 (MinIO).")

    # --- webhooks (app/webhooks/) --------------------------------------------------------
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Hosts a webhook may point to although they are "
        "private or loopback addresses (comma-separated, e.g. 127.0.0.1,hooks.internal). "
        "Every other private, loopback or link-local address is refused.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Per delivery attempt.")
    webhook_max_attempts: int = Field(6, ge=1, le=20, description="Attempts per delivery "
                                      "(exponential backoff between them).")
    webhook_backoff_s: float = Field(1.0, gt=0, description="The first retry's delay; each "
                                     "further one doubles it.")

    # --- observability (app/observability/) ----------------------------------------------
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="json: one JSON object per line (job_id and record_id on a "
        "job's lines); text: human-readable; auto: text on a terminal, else json.")

    # --- several processes (app/cluster/; docs/deploy.md) -------------------------------
    executor: Literal["local", "ray"] = Field(
        "local", description="Who runs device jobs: local (worker threads in this process) "
        "or ray (Generator replicas on a Ray cluster; install bildwerk[ray]). ray needs "
        "PostgreSQL and BILDWERK_REDIS_URL.")
    workers: int = Field(
        1, ge=1, le=64, description="Server processes `bildwerk serve` starts on its one "
        "port, each a whole server with its own device worker and its own copy of the "
        "models, its torch threads its share of the cores (cores // workers). For small "
        "models on the CPU, several single-thread processes out-run one process using every "
        "core. More than 1 makes them ingresses of one cluster: needs PostgreSQL and "
        "BILDWERK_REDIS_URL, as BILDWERK_CLUSTER does.")
    cluster: bool = Field(
        False, description="This process is one of several ingresses sharing the database "
        "(behind a load balancer). Needs PostgreSQL and BILDWERK_REDIS_URL; implied by "
        "BILDWERK_EXECUTOR=ray.")
    redis_url: str | None = Field(
        None, description="Redis shared by every ingress and worker (redis://host:6379/0): "
        "job progress, events and cancels reach every replica through it.")
    lease_s: float = Field(
        30.0, ge=2, description="A queued or running job's lease: its process renews it every "
        "third of this; any process records a job whose lease ran out 'interrupted'.")
    ray_address: str = Field(
        "auto", description="The Ray cluster to join: auto (the one started on this machine "
        "with `ray start`) or an address like 10.0.0.5:6379 / ray://head:10001.")
    ray_app_name: str = Field("bildwerk", description="The Ray Serve application's name.")
    ray_min_replicas: int = Field(1, ge=0, description="Generator replicas kept running.")
    ray_max_replicas: int = Field(1, ge=1, description="Most Generator replicas (autoscaling "
                                  "adds replicas up to this under load).")
    ray_target_ongoing: float = Field(
        1.0, gt=0, description="Autoscaling target: jobs in flight per replica.")
    ray_num_gpus: float = Field(
        0.0, ge=0, description="GPUs per Generator replica (1 on a GPU cluster: one replica "
                               "per GPU; 0 on the CPU).")
    ray_num_cpus: float = Field(1.0, gt=0, description="CPUs per Generator replica.")
    ray_torch_threads: int | None = Field(
        None, ge=1, description="torch threads in a CPU replica. Default: its CPUs.")
    ray_models_per_replica: int = Field(
        0, ge=0, description="Base checkpoints one replica keeps loaded (Serve's multiplexing "
        "routes a model's jobs to replicas holding it). 0: as many of the largest model as "
        "the replica's memory budget (BILDWERK_MEMORY_BUDGET_MB) holds.")

    # --- embedded default model ---------------------------------------------------------
    embedded_model_id: str = "bildwerk-micro"

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("webhook_allowed_hosts", "loopback_scopes", "cors_origins",
                     mode="before")
    @classmethod
    def _split_list(cls, value: object, info: ValidationInfo) -> object:
        """A list setting from the environment: JSON (``["a", "b"]``) or comma-separated;
        ``none`` for an empty list of scopes (an empty variable means the default)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        if info.field_name == "loopback_scopes" and text.lower() == "none":
            return []
        parts = [part.strip() for part in text.split(",") if part.strip()]
        return [p.lower() for p in parts] if info.field_name == "webhook_allowed_hosts" \
            else parts

    @field_validator("loopback_scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"generate", "read", "admin"})
        if unknown:
            raise ValueError(f"unknown scopes {unknown}: use generate, read or admin")
        return list(dict.fromkeys(value))

    @field_validator("cors_origins")
    @classmethod
    def _clean_origins(cls, value: list[str]) -> list[str]:
        """Browsers send an Origin without a trailing slash or path: refuse what would never
        match instead of failing silently."""
        origins = []
        for origin in (o.strip().rstrip("/") for o in value):
            if not origin:
                continue
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"BILDWERK_CORS_ORIGINS: {origin!r} is not an origin like "
                                 "https://kiosk.example or http://127.0.0.1:5173")
            origins.append(origin)
        return origins

    @field_validator("rate_limit", "prompt_rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"BILDWERK_RATE_LIMIT: {value!r} is not a rate like "
                                 '"60/minute" or "5/second;200/hour"') from exc
        return value.strip()

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_pixels < 64 * 64:
            raise ValueError("BILDWERK_MAX_PIXELS must allow at least 64x64")
        return self

    @property
    def shared(self) -> bool:
        """Several processes share the database (several ingresses or server processes,
        or Ray workers)."""
        return self.cluster or self.executor == "ray" or self.workers > 1

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
