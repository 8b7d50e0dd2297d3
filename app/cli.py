"""The ``bildwerk`` command line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

cli = typer.Typer(help="Bildwerk: a self-hosted image generation server.", no_args_is_help=True)


@contextmanager
def _failing_clearly(*expected: type[Exception]) -> Iterator[None]:
    """Bildwerk's own errors (and ``expected`` ones) end a command with "error: ..." on
    stderr and exit status 2, not a traceback."""
    from app.errors import BildwerkError

    try:
        yield
    except (BildwerkError, *expected) as exc:
        typer.echo(f"error: {getattr(exc, 'message', None) or exc}", err=True)
        raise typer.Exit(2) from exc


@contextmanager
def _services():
    """The parts of the server, as the server builds them (:func:`build_services`), from
    BILDWERK_* variables and .env; closed afterwards. A damaged or lost database is refused
    as at server start (``bildwerk db init --force``)."""
    from app.config import Settings
    from app.persistence.integrity import check_database
    from app.services.container import build_services

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_database(settings)
    services = build_services(settings)
    try:
        yield services
    finally:
        services.close()


@cli.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to bind."),
          port: int = typer.Option(8000, help="Port to listen on."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Start the HTTP server (settings from BILDWERK_* variables and .env): BILDWERK_WORKERS
    processes on one port, each a whole server with its own device worker."""
    import uvicorn

    from app.cluster.checks import ClusterMisconfigured, check_cluster
    from app.config import Settings
    from app.observability.logs import configure_logging

    settings = Settings()
    try:
        check_cluster(settings)  # several processes: PostgreSQL and Redis, before forking
    except ClusterMisconfigured as exc:
        typer.echo(f"bildwerk serve: {exc}", err=True)
        raise typer.Exit(2) from None
    # BILDWERK_LOG_FORMAT: in JSON, uvicorn's lines too (its own text config is skipped)
    json_logs = configure_logging(settings.log_format) == "json"
    if settings.workers > 1:  # what the processes must not do at once, done here
        from app.lifecycle import prepare_for_workers

        prepare_for_workers(settings)
    uvicorn.run("app.main:app", host=host, port=port, log_level=log_level,
                workers=settings.workers if settings.workers > 1 else None,
                **({"log_config": None} if json_logs else {}))


@cli.command()
def doctor(lock: Path = typer.Option(None, help="The requirements/ folder with the lock. "
                                     "Default: the one beside the code, else ./requirements.")
           ) -> None:
    """Print what a bug report needs: versions, device, storage, providers, and whether
    the installed packages match the lock (exit status 1 when they do not)."""
    from app.config import Settings
    from app.doctor import render, report

    sections, matches_lock = report(Settings(), lock)  # the parts via build_services
    typer.echo(render(sections))
    if not matches_lock:
        raise typer.Exit(1)


db_cli = typer.Typer(help="Set up the database.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@db_cli.command("init")
def db_init(force: bool = typer.Option(
        False, "--force", help="Create a new, empty database even though the blob store "
        "holds files of an earlier install (its records and API keys are not recovered).")
        ) -> None:
    """Create the database (or migrate an existing one) at BILDWERK_DATABASE_URL, default
    <data_dir>/bildwerk.db. Refuses a missing or empty database beside the blobs of an
    earlier install unless --force; never touches a damaged SQLite file."""
    from app.config import Settings
    from app.persistence.integrity import init_database

    with _failing_clearly():
        done = init_database(Settings(), force=force)
    typer.echo(done)


models_cli = typer.Typer(help="Inspect and merge models.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")


@models_cli.command("list")
def list_models() -> None:
    """List the models the registry discovers (builds the embedded one if missing)."""
    with _failing_clearly(), _services() as services:
        registry = services.registry
        for entry in registry.list():
            mark = "*" if entry.id == registry.default_id else " "
            typer.echo(f"{mark} {entry.id:30s} {entry.family:5s} {entry.variant:8s} "
                       f"{entry.native_resolution}px {entry.format}")


@models_cli.command("merge")
def merge_models(
    a: str = typer.Argument(..., help="Model id of A."),
    b: str = typer.Argument(..., help="Model id of B."),
    name: str = typer.Option(..., help="Id of the new model (<name>.safetensors)."),
    method: str = typer.Option("weighted_sum", help="weighted_sum or add_difference."),
    alpha: float = typer.Option(0.5, help="Weight of B (or of B - C)."),
    c: str = typer.Option(None, help="Model id of C for add_difference."),
    lora: list[str] = typer.Option([], help="LoRA to fuse, as NAME or NAME:WEIGHT."),
) -> None:
    """Merge checkpoints of one family into MODELS_DIR/<name>.safetensors."""
    from app.pipelines.merge import merge
    from app.schemas.models import MergeRequest

    refs = [{"name": item.split(":")[0], "weight": float(item.split(":")[1])}
            if ":" in item else {"name": item} for item in lora]
    with _failing_clearly(), _services() as services:
        req = MergeRequest(a=a, b=b, c=c, method=method, alpha=alpha, name=name, loras=refs)
        spec = services.models.merge_spec(req)
        path = merge(spec, services.registry.models_dir)
    typer.echo(f"wrote {path}")


@cli.command()
def prompts(
    n: int = typer.Argument(..., min=1, max=10000, help="How many prompts to make."),
    out: str = typer.Option("prompts.csv", help="File to append to (.csv or .jsonl)."),
    idea: str = typer.Option(None, help="The wish to expand. Default: a new idea per prompt "
                             "from Bildwerk's own themes."),
    style: str = typer.Option(None, help="A style preset (see GET /styles)."),
    provider: str = typer.Option(None, help="local, openai or gemini. Default: "
                                 "BILDWERK_PROMPT_PROVIDER."),
    seed: int = typer.Option(None, help="Seed of the first prompt. Default: random."),
    language: str = typer.Option(None, help="Language of --idea, e.g. de. Default: detected."),
) -> None:
    """Append N expanded prompts to a CSV file with the columns title, description,
    metatags, prompt (the header only into a new or empty file) or to a JSON Lines file.
    Each batch is recorded in the database like a POST /prompt-expand."""
    import secrets

    from app.prompting.exports import append_csv, append_jsonl
    from app.prompting.ideas import suggest_ideas
    from app.schemas.prompts import MAX_PROMPTS, PromptExpandRequest

    path = Path(out)
    append = append_jsonl if path.suffix.lower() == ".jsonl" else append_csv
    first = seed if seed is not None else secrets.randbelow(2**31)
    written = 0
    with _failing_clearly(ValueError), _services() as services:
        service = services.prompts
        while written < n:
            batch = min(MAX_PROMPTS, n - written)
            common = {"style": style, "provider": provider, "seed": first + written,
                      "language": language}
            if idea:
                req = PromptExpandRequest(idea=idea, count=batch, **common)
            else:
                ideas = suggest_ideas(batch, first + written)
                req = PromptExpandRequest(script="\n".join(ideas), count=1, **common)
            result = service.expand(req, client={"host": "cli", "user_agent": "bildwerk prompts"})
            written += append(path, [p.model_dump(mode="json") for p in result.prompts])
            typer.echo(f"{written}/{n} prompts ({result.provider}), record "
                       f"{result.record_id}", err=True)
    typer.echo(f"appended {written} prompts to {path}")


@cli.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="One prompt (or use --file).")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Prompts: .csv with a 'prompt' column (and optional txt2img "
        "columns), .jsonl (e.g. from `bildwerk prompts`) or .txt (one per line).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Batch folder: images, info.json, info.md. Running the same "
        "command into it again makes only what is missing or failed. Default: "
        "output/<file stem or prompt>.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id (GET /models).")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    width: Annotated[int | None, typer.Option(help="Width, a multiple of 8.")] = None,
    height: Annotated[int | None, typer.Option(help="Height, a multiple of 8.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of each item's first image "
                                             "(image i: seed+i). Default: drawn.")] = None,
    num_images: Annotated[int | None, typer.Option(help="Images per prompt.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Sampler (GET /schedulers).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="Guidance scale.")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to avoid.")] = None,
    provider: Annotated[str | None, typer.Option(help="local, openai, hf, gemini or a "
                                                 "chain.")] = None,
    style: Annotated[str | None, typer.Option(help="Style preset (GET /styles).")] = None,
    vae: Annotated[str | None, typer.Option(help="VAE id (GET /vaes).")] = None,
    clip_skip: Annotated[int | None, typer.Option(help="CLIP skip (1: last layer).")] = None,
    lora: Annotated[list[str] | None, typer.Option(
        help="LoRA as NAME or NAME:WEIGHT. Repeat for several.")] = None,
    translate: Annotated[bool | None, typer.Option(
        "--translate/--no-translate", help="Translate prompts to English first.")] = None,
    expand_prompt: Annotated[bool | None, typer.Option(
        "--expand-prompt/--no-expand-prompt", help="Let the server expand prompts.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs at a time.")] = 2,
    url: Annotated[str, typer.Option(envvar="BILDWERK_URL", help="The server.")
                   ] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(
        envvar="BILDWERK_API_KEY", show_default=False,
        help="Sent as Authorization: Bearer.")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a 429/503 or a refused "
                                         "connection, per request.")] = 8,
    progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show a progress bar.")] = True,
    exact: Annotated[bool, typer.Option(
        "--exact/--no-exact", help="Ask the server to run each item alone (\"batch\": "
        "false), so an item and its seed give the same bytes on every run, a resumed one "
        "included. --no-exact lets it batch compatible items: faster under load, images "
        "equal within rounding (docs/performance.md).")] = True,
) -> None:
    """Generate images for one prompt or a file of prompts on a running server (POST
    /txt2img), a few at a time, into one folder with info.json and info.md. Exit status:
    0 all made, 1 some items failed (made again on the next run), 2 usage, input,
    connection or key error."""
    from app.batch.command import generate as run_generate
    from app.batch.inputs import parse_lora

    try:
        loras = [parse_lora(item) for item in lora or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--lora") from exc
    options = {"model": model, "steps": steps, "width": width, "height": height,
               "seed": seed, "num_images": num_images, "scheduler": scheduler,
               "guidance_scale": guidance_scale, "negative_prompt": negative_prompt,
               "provider": provider, "style": style, "vae": vae, "clip_skip": clip_skip,
               "loras": loras, "translate": translate, "expand_prompt": expand_prompt}
    code = run_generate(prompt, file, out, options, url=url, api_key=api_key,
                        concurrency=concurrency, retries=retries, progress=progress,
                        echo=typer.echo, exact=exact)
    raise typer.Exit(code)


keys_cli = typer.Typer(help="Manage API keys (stored hashed; the secret is shown once).",
                       no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@contextmanager
def _key_repository():

    with _failing_clearly(), _services() as services:
        yield services.keys


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@keys_cli.command("create")
def create_key(
    name: str = typer.Argument(..., help="Who or what uses the key, e.g. blender-studio-3."),
    scope: list[str] = typer.Option([], "--scope", help="generate, read or admin (admin "
                                    "implies the others). Repeat for several."),
) -> None:
    """Create a key and print its secret (once: only its hash is stored)."""
    with _key_repository() as keys:
        key, secret = keys.create(name, [s.strip().lower() for s in scope])
    typer.echo(f"created key {key.id} ({key.name}; scopes: {', '.join(key.scopes)}). "
               "Store the secret now, it is not shown again:", err=True)
    typer.echo(secret)


@keys_cli.command("list")
def list_keys() -> None:
    """Every key: id, name, scopes, created, last used, revoked (never the secret)."""
    with _key_repository() as keys:
        rows = keys.list()
    typer.echo(f"{'id':16s}  {'name':24s}  {'scopes':21s}  {'prefix':12s}  "
               f"{'created (UTC)':16s}  {'last used':16s}  revoked")
    for k in rows:
        typer.echo(f"{k.id:16s}  {k.name[:24]:24s}  {','.join(k.scopes):21s}  "
                   f"{k.prefix + '…':12s}  {_when(k.created_at):16s}  "
                   f"{_when(k.last_used_at):16s}  {_when(k.revoked_at)}")


@keys_cli.command("revoke")
def revoke_key(key_id: str = typer.Argument(..., metavar="ID", help="The key's id "
                                            "(bildwerk keys list).")) -> None:
    """Revoke a key: requests with it are answered 401 from now on."""
    with _key_repository() as keys:
        key = keys.revoke(key_id.strip())
    typer.echo(f"revoked key {key.id} ({key.name}) at {_when(key.revoked_at)}")


@keys_cli.command("webhook-secret")
def webhook_secret(
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (bildwerk keys "
                                 "list), or `keyless` for requests made without a key."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace the secret first."),
) -> None:
    """Print the secret (whsec_…) that signs the key's webhook deliveries; hand it to the
    key's owner to verify them (Standard Webhooks). Made on first use."""
    from app.persistence.records import KEYLESS
    from app.webhooks.secrets import WebhookSecrets

    with _failing_clearly(), _services() as services:
        key = None if key_id.strip() == KEYLESS else services.keys.get(key_id.strip()).id
        store = WebhookSecrets(services.db)
        secret = store.rotate(key) if rotate else store.secret_for(key)
    typer.echo(secret)


dataset_cli = typer.Typer(help="Build training sets (Hugging Face imagefolder layout).",
                          no_args_is_help=True)
cli.add_typer(dataset_cli, name="dataset")


@dataset_cli.command("export")
def dataset_export(
    out: Path = typer.Option(..., "--out", help="Folder to write (must be missing or empty "
                             "unless --overwrite)."),
    endpoint: str = typer.Option(None, help="Only this endpoint's records, e.g. inpaint; "
                                 "comma-separated for several (inpaint,inpainting)."),
    min_rating: int = typer.Option(None, "--min-rating", min=1, max=5,
                                   help="Only records rated at least this."),
    flag: list[str] = typer.Option([], "--flag", help="A feedback flag the record must "
                                   "carry, e.g. use_for_training. Repeat: all must be present."),
    exclude_flag: list[str] = typer.Option(["exclude"], "--exclude-flag", help="Leave out "
                                           "records with this flag. Repeat for several."),
    since: datetime = typer.Option(None, help="Created at or after (e.g. 2026-01-01; UTC)."),
    until: datetime = typer.Option(None, help="Created before (UTC)."),
    key_id: str = typer.Option(None, "--key-id", help="Only records of this API key's id."),
    client_host: str = typer.Option(None, "--client-host", help="Only records from this "
                                    "client address."),
    status: str = typer.Option("succeeded", help="Record status; 'any' for all."),
    fmt: str = typer.Option("jsonl", "--format", help="metadata.jsonl or metadata.csv: "
                            "jsonl or csv."),
    masks: bool = typer.Option(True, "--masks/--no-masks", help="Write the masks and "
                               "inputs of inpaint records."),
    limit: int = typer.Option(None, min=1, help="Read at most this many records."),
    from_folder: Path = typer.Option(None, "--from-folder", help="Instead of records: a "
                                     "folder of images with same-name .txt captions (or its "
                                     "own metadata.jsonl/csv)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
) -> None:
    """Export recorded images (filtered by feedback, endpoint, time, key or client) or a
    captioned folder as a training set: images plus metadata.jsonl/csv (file_name, text,
    ...). Settings (database URL, data dir) come from BILDWERK_* variables and .env."""
    from training.dataset import DatasetError, export_folder, export_records

    with _failing_clearly(DatasetError, FileExistsError):
        if from_folder is not None:
            result = export_folder(from_folder, out, fmt=fmt, overwrite=overwrite)
        else:
            with _services() as services:
                settings = services.settings
            result = export_records(
                settings.resolved_database_url, settings.blob_store or settings.blobs_dir,
                out, s3_endpoint_url=settings.s3_endpoint_url, endpoint=endpoint,
                min_rating=min_rating, flags=flag, exclude_flags=exclude_flag, since=since,
                until=until, key_id=key_id, client_host=client_host, status=status,
                fmt=fmt, include_masks=masks, limit=limit, overwrite=overwrite)
    typer.echo(f"wrote {result.count} images to {result.out} ({result.skipped} skipped: "
               f"missing or unreadable files); metadata: {result.metadata_path}")


# -- training (bildwerk train lora|finetune) ------------------------------------------------
train_cli = typer.Typer(help="Train a LoRA or fine-tune a model on a dataset (imagefolder: "
                        "images + metadata.jsonl/csv), then register it in the models dir.",
                        no_args_is_help=True)
cli.add_typer(train_cli, name="train")

_T = "training"  # help panel
TBase = Annotated[str, typer.Option(
    "--base", help="The model to start from: a model id of the registry (bildwerk models "
    "list; single files are converted to a diffusers folder once) or a diffusers folder.")]
TDataset = Annotated[Path, typer.Option(
    "--dataset", help="Dataset folder: images + metadata.jsonl/csv with file_name, text "
    "[, mask_file_name] (bildwerk dataset export).")]
TName = Annotated[str, typer.Option(
    "--name", help="Id of the result: the LoRA's or model's name in the models dir.")]
TOutput = Annotated[Path | None, typer.Option(
    "--output", help="Where to write the result. Default: <data_dir>/training/<name>/<name>"
    "[.safetensors].")]
TTask = Annotated[str, typer.Option("--task", help="txt2img, or inpaint (needs an inpaint "
                                    "base with a 9-channel UNet).")]
TResolution = Annotated[int | None, typer.Option(
    "--resolution", min=8, help="Training size (shorter side resized, square crop). "
    "Default: the base's native resolution.")]
TSteps = Annotated[int, typer.Option("--steps", "--max-train-steps", min=1,
                                     help="Optimizer steps.", rich_help_panel=_T)]
TBatch = Annotated[int, typer.Option("--batch-size", "--train-batch-size", min=1,
                                     rich_help_panel=_T)]
TAccum = Annotated[int, typer.Option("--gradient-accumulation-steps", "--grad-accum", min=1,
                                     help="Batches per optimizer step.", rich_help_panel=_T)]
TLr = Annotated[float, typer.Option("--learning-rate", "--lr", rich_help_panel=_T)]
TSched = Annotated[str, typer.Option("--lr-scheduler", help="constant, linear, cosine, "
                                     "constant_with_warmup, … (diffusers' get_scheduler).",
                                     rich_help_panel=_T)]
TWarmup = Annotated[int, typer.Option("--lr-warmup-steps", min=0, rich_help_panel=_T)]
TPrecision = Annotated[str, typer.Option(
    "--mixed-precision", help="no, fp16 (CUDA only) or bf16.", rich_help_panel=_T)]
TSeed = Annotated[int, typer.Option("--seed", rich_help_panel=_T)]
TTrainTe = Annotated[bool, typer.Option("--train-text-encoder/--no-train-text-encoder",
                                        rich_help_panel=_T)]
TNoiseOffset = Annotated[float, typer.Option("--noise-offset", min=0.0, rich_help_panel=_T)]
TSnr = Annotated[float | None, typer.Option("--snr-gamma", help="Min-SNR loss weighting "
                                           "(5.0 is the paper's choice).", rich_help_panel=_T)]
TCrop = Annotated[bool, typer.Option("--center-crop/--random-crop", rich_help_panel=_T)]
TFlip = Annotated[bool, typer.Option("--random-flip/--no-random-flip", rich_help_panel=_T)]
TCkpt = Annotated[int, typer.Option("--checkpointing-steps", min=0, help="Save a resumable "
                                    "checkpoint every N steps (0: never).")]
TCkptLimit = Annotated[int | None, typer.Option("--checkpoints-total-limit", min=1,
                                                help="Keep only the newest N checkpoints.")]
TResume = Annotated[str | None, typer.Option(
    "--resume-from-checkpoint", help="'latest' (of this run's work dir) or a checkpoint "
    "folder.")]
TValPrompt = Annotated[list[str] | None, typer.Option(
    "--validation-prompt", help="Render this prompt (repeat for several) every "
    "--validation-steps and at the end, into <work_dir>/validation/step-<n>/.")]
TValSteps = Annotated[int, typer.Option("--validation-steps", min=0)]
TValInfer = Annotated[int, typer.Option("--validation-inference-steps", min=1)]
TWorkers = Annotated[int, typer.Option("--workers", "--dataloader-num-workers", min=0)]
TWorkDir = Annotated[Path | None, typer.Option(
    "--work-dir", help="Checkpoints, log and validation images. Default: <output>.work")]
TLogEvery = Annotated[int, typer.Option("--log-every", min=1)]
TProgress = Annotated[bool, typer.Option("--progress/--no-progress")]
TModelsDir = Annotated[Path | None, typer.Option(
    "--models-dir", help="Where to register the result. Default: BILDWERK_MODELS_DIR.")]
TRegister = Annotated[bool, typer.Option("--register/--no-register", help="Copy the result "
                                         "into the models dir.")]
TOverwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a registered LoRA or "
                                          "model of the same name.")]
TServer = Annotated[str | None, typer.Option(
    "--server", help="After registering, POST <URL>/models/refresh on this running server.")]
TApiKey = Annotated[str | None, typer.Option("--api-key", envvar="BILDWERK_API_KEY",
                                             help="Admin API key for --server.")]


@train_cli.command("lora")
def train_lora(
    base: TBase, dataset: TDataset, name: TName, output: TOutput = None,
    task: TTask = "txt2img", resolution: TResolution = None, steps: TSteps = 100,
    batch_size: TBatch = 1, gradient_accumulation_steps: TAccum = 1, learning_rate: TLr = 1e-4,
    lr_scheduler: TSched = "constant", lr_warmup_steps: TWarmup = 0,
    mixed_precision: TPrecision = "no", seed: TSeed = 0,
    rank: Annotated[int, typer.Option("--rank", min=1, rich_help_panel=_T)] = 4,
    lora_alpha: Annotated[int | None, typer.Option(
        "--lora-alpha", min=1, help="Default: the rank.", rich_help_panel=_T)] = None,
    train_text_encoder: TTrainTe = False, noise_offset: TNoiseOffset = 0.0,
    snr_gamma: TSnr = None, center_crop: TCrop = True, random_flip: TFlip = False,
    checkpointing_steps: TCkpt = 0, checkpoints_total_limit: TCkptLimit = None,
    resume_from_checkpoint: TResume = None, validation_prompt: TValPrompt = None,
    validation_steps: TValSteps = 0, validation_inference_steps: TValInfer = 20,
    workers: TWorkers = 0, work_dir: TWorkDir = None, log_every: TLogEvery = 1,
    progress: TProgress = True, models_dir: TModelsDir = None, register: TRegister = True,
    overwrite: TOverwrite = False, server: TServer = None, api_key: TApiKey = None,
) -> None:
    """Train a LoRA (UNet attention, optionally the text encoder) into one .safetensors,
    registered as <models_dir>/loras/<name>.safetensors."""
    _train_command("lora", locals())


@train_cli.command("finetune")
def train_finetune(
    base: TBase, dataset: TDataset, name: TName, output: TOutput = None,
    task: TTask = "txt2img", resolution: TResolution = None, steps: TSteps = 100,
    batch_size: TBatch = 1, gradient_accumulation_steps: TAccum = 1, learning_rate: TLr = 1e-5,
    lr_scheduler: TSched = "constant", lr_warmup_steps: TWarmup = 0,
    mixed_precision: TPrecision = "no", seed: TSeed = 0,
    train_text_encoder: TTrainTe = False, noise_offset: TNoiseOffset = 0.0,
    snr_gamma: TSnr = None, center_crop: TCrop = True, random_flip: TFlip = False,
    checkpointing_steps: TCkpt = 0, checkpoints_total_limit: TCkptLimit = None,
    resume_from_checkpoint: TResume = None, validation_prompt: TValPrompt = None,
    validation_steps: TValSteps = 0, validation_inference_steps: TValInfer = 20,
    workers: TWorkers = 0, work_dir: TWorkDir = None, log_every: TLogEvery = 1,
    progress: TProgress = True, models_dir: TModelsDir = None, register: TRegister = True,
    overwrite: TOverwrite = False, server: TServer = None, api_key: TApiKey = None,
    from_scratch: Annotated[bool, typer.Option(
        "--from-scratch", help="The base's weights are freshly initialised (recorded in the "
        "log).", rich_help_panel=_T)] = False,
) -> None:
    """Fine-tune the whole UNet (and optionally the text encoder) into a diffusers folder,
    registered as <models_dir>/<name>/."""
    _train_command("full", locals())


def _train_command(method: str, opts: dict) -> None:
    from app.config import Settings
    from training.config import TrainConfig
    from training.register import check_name_free, refresh_server, register_output
    from training.trainer import train

    settings = Settings()
    models_dir = opts["models_dir"] or settings.models_dir
    name = opts["name"]
    output = opts["output"] or (settings.data_dir / "training" / name / (
        f"{name}.safetensors" if method == "lora" else name))
    with _failing_clearly(ValueError, FileExistsError, RuntimeError):
        if opts["register"]:  # refuse now rather than after a long run
            check_name_free(models_dir, method, name, overwrite=opts["overwrite"])
        base, native = _training_base(opts["base"], settings, models_dir)
        cfg = TrainConfig(
            method=method, base=base, dataset=opts["dataset"], output=output,
            task=opts["task"], resolution=opts["resolution"] or native or 512,
            train_batch_size=opts["batch_size"],
            gradient_accumulation_steps=opts["gradient_accumulation_steps"],
            max_train_steps=opts["steps"], learning_rate=opts["learning_rate"],
            lr_scheduler=opts["lr_scheduler"], lr_warmup_steps=opts["lr_warmup_steps"],
            mixed_precision=opts["mixed_precision"], seed=opts["seed"],
            rank=opts.get("rank", 4), lora_alpha=opts.get("lora_alpha"),
            train_text_encoder=opts["train_text_encoder"],
            checkpointing_steps=opts["checkpointing_steps"],
            checkpoints_total_limit=opts["checkpoints_total_limit"],
            resume_from_checkpoint=opts["resume_from_checkpoint"],
            validation_prompts=list(opts["validation_prompt"] or []),
            validation_steps=opts["validation_steps"],
            validation_inference_steps=opts["validation_inference_steps"],
            noise_offset=opts["noise_offset"], snr_gamma=opts["snr_gamma"],
            dataloader_num_workers=opts["workers"], work_dir=opts["work_dir"],
            log_every=opts["log_every"], progress=opts["progress"],
            from_scratch=opts.get("from_scratch", False), center_crop=opts["center_crop"],
            random_flip=opts["random_flip"])
        result = train(cfg)
        typer.echo(f"trained {result.steps} steps in {result.seconds:.1f}s, final loss "
                   f"{result.final_loss:.4f}: {result.output} (log: {result.log_path})")
        if result.validation_dir:
            typer.echo(f"validation images: {result.validation_dir}")
        if opts["register"]:
            dest = register_output(result, models_dir, method, name=name,
                                   overwrite=opts["overwrite"])
            typer.echo(f"registered {'LoRA' if method == 'lora' else 'model'} {name!r}: {dest}")
            if opts["server"]:
                found = refresh_server(opts["server"], opts["api_key"])
                listed = name in found["loras" if method == "lora" else "models"]
                typer.echo(f"refreshed {opts['server']}: {name!r} "
                           f"{'is listed' if listed else 'is NOT listed (another models dir?)'}")


def _training_base(base: str, settings, models_dir: Path) -> tuple[Path, int | None]:
    """A diffusers folder to train from, and its native resolution: ``base`` as a folder,
    or a registry model id (a single-file checkpoint is converted once, into
    ``<data_dir>/training/bases/``)."""
    from app.pipelines.families import probe_diffusers_folder

    path = Path(base).expanduser()
    if path.is_dir() and (path / "model_index.json").is_file():
        return path, probe_diffusers_folder(path).native_resolution
    from app.pipelines.device import resolve_runtime
    from app.pipelines.hub import hub_snapshot
    from app.pipelines.registry import load_pipeline
    from app.services.container import build_services

    services = build_services(settings.model_copy(update={"models_dir": models_dir}))
    entry = services.registry.resolve(base)
    if entry.format == "diffusers":
        if entry.repo_id is not None:
            snapshot = hub_snapshot(entry.repo_id, settings.hf_cache_dir, weights=True)
            if snapshot is None:
                raise ValueError(f"the weights of {entry.repo_id!r} are neither cached nor "
                                 "downloadable now")
            return Path(snapshot), entry.native_resolution
        return entry.path, entry.native_resolution
    stat = entry.path.stat()
    converted = settings.data_dir / "training" / "bases" / \
        f"{entry.id}-{stat.st_size}-{stat.st_mtime_ns}"
    if not (converted / "model_index.json").is_file():
        typer.echo(f"converting {entry.path.name} to a diffusers folder: {converted}", err=True)
        pipe = load_pipeline(entry, resolve_runtime("cpu"))
        tmp = converted.with_name(f".{converted.name}.partial")
        pipe.save_pretrained(tmp, safe_serialization=True)
        tmp.rename(converted)
    return converted, entry.native_resolution


# -- blob store (bildwerk blobs migrate) ----------------------------------------------------
blobs_cli = typer.Typer(help="Manage the blob store (BILDWERK_BLOB_STORE).",
                        no_args_is_help=True)
cli.add_typer(blobs_cli, name="blobs")


@blobs_cli.command("migrate")
def blobs_migrate(
    to: str = typer.Option(..., "--to", help="The target store: s3://bucket/prefix (or "
                           "file:///abs/path)."),
    source: str = typer.Option(None, "--from", help="The store to copy from. Default: the "
                               "folder of BILDWERK_BLOB_STORE when that is a file:// store, "
                               "else <data_dir>/blobs."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help="The S3 endpoint of an "
                                     "s3:// store. Default: BILDWERK_S3_ENDPOINT_URL."),
    workers: int = typer.Option(8, min=1, max=64, help="Blobs copied at once."),
) -> None:
    """Copy every blob into another store: create-only (what is there is skipped), each
    copy read back and checked against its sha256. Resumable: run it again after an
    interruption. The database is not changed; point BILDWERK_BLOB_STORE at the target
    afterwards. Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION."""
    from app.config import Settings
    from app.persistence.blob_stores import (
        BlobStoreUnusable,
        folder_location,
        migrate,
        parse_location,
        settings_location,
    )

    settings = Settings()
    endpoint = endpoint_url or settings.s3_endpoint_url
    with _failing_clearly(BlobStoreUnusable):
        if source is not None:
            src = parse_location(source, endpoint)
        else:
            configured = settings_location(settings)
            src = configured if configured.is_local else folder_location(settings.blobs_dir)
        dst = parse_location(to, endpoint)
        typer.echo(f"copying blobs from {src.describe()} to {dst.describe()}")
        report = migrate(src, dst, workers=workers, progress=lambda r: typer.echo(
            f"  {r.total} blobs: {r.copied} copied, {r.skipped} already there, "
            f"{len(r.failed)} failed"))
    for failure in report.failed:
        typer.echo(f"failed: {failure}", err=True)
    typer.echo(f"{report.copied} copied, {report.skipped} already there, "
               f"{len(report.failed)} failed")
    if report.failed:
        raise typer.Exit(1)


# -- the Ray executor (bildwerk ray deploy|status|down) -------------------------------------
ray_cli = typer.Typer(help="The Generator replicas on a Ray cluster (BILDWERK_EXECUTOR=ray; "
                      "install bildwerk[ray]).", no_args_is_help=True)
cli.add_typer(ray_cli, name="ray")


@ray_cli.command("deploy")
def ray_deploy(
    ingress: int = typer.Option(0, min=0, help="Also serve the API from Ray: this many "
                                "Ingress replicas behind Ray's HTTP proxy (0: none; run "
                                "`bildwerk serve` ingresses instead)."),
    host: str = typer.Option("127.0.0.1", help="The HTTP proxy's interface (--ingress)."),
    port: int = typer.Option(8000, help="The HTTP proxy's port (--ingress). Serve keeps the "
                             "address it first started with on a cluster: `bildwerk ray "
                             "down` (or a new cluster) to change it."),
) -> None:
    """Deploy (or update) the Generator application on the Ray cluster at
    BILDWERK_RAY_ADDRESS, with the BILDWERK_RAY_* placement and autoscaling; returns once
    its replicas are up. Ingresses started with BILDWERK_EXECUTOR=ray use it (and deploy it
    themselves only when it is missing)."""
    from app.cluster.checks import ClusterMisconfigured, check_cluster
    from app.cluster.deploy import deploy, replicas_running
    from app.config import Settings

    settings = Settings()
    with _failing_clearly(ClusterMisconfigured):
        check_cluster(settings.model_copy(update={"executor": "ray"}))
    if ingress:  # before anything deploys: Serve keeps the address it first started with
        from app.cluster.serve_ingress import start_proxy

        start_proxy(settings, host=host, port=port)
    with _services() as services:
        deploy(settings, services.registry)
    typer.echo(f"{settings.ray_app_name}: {replicas_running(settings)} Generator replica(s) "
               "running")
    if ingress:
        from app.cluster.serve_ingress import deploy_ingress

        deploy_ingress(settings, ingress)
        typer.echo(f"{settings.ray_app_name}-ingress: {ingress} Ingress replica(s) at "
                   f"http://{host}:{port}/")


@ray_cli.command("status")
def ray_status() -> None:
    """The Generator application's state and its replicas (exit status 1 when none runs)."""
    from ray import serve

    from app.cluster.deploy import connect, replicas_running
    from app.config import Settings

    settings = Settings()
    connect(settings)
    app = serve.status().applications.get(settings.ray_app_name)
    if app is None:
        typer.echo(f"{settings.ray_app_name}: not deployed")
        raise typer.Exit(1)
    for name, deployment in app.deployments.items():
        typer.echo(f"{settings.ray_app_name}/{name}: {deployment.status.value}, replicas "
                   f"{dict(deployment.replica_states)}")
    if replicas_running(settings) == 0:
        raise typer.Exit(1)


@ray_cli.command("down")
def ray_down() -> None:
    """Remove the Generator application (its replicas finish their jobs first, within 30 s)."""
    from app.cluster.deploy import shutdown_application
    from app.config import Settings

    settings = Settings()
    shutdown_application(settings)
    typer.echo(f"{settings.ray_app_name}: removed")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
