"""The ``bildwerk`` command line."""

from __future__ import annotations

import typer

cli = typer.Typer(help="Bildwerk: a self-hosted image generation server.", no_args_is_help=True)


@cli.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to bind."),
          port: int = typer.Option(8000, help="Port to listen on."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Start the HTTP server (settings from BILDWERK_* variables and .env)."""
    import uvicorn

    uvicorn.run("app.main:app", host=host, port=port, log_level=log_level)


models_cli = typer.Typer(help="Inspect and merge models.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")


def _registry():
    from app.config import Settings
    from app.pipelines.adapters import LoraCatalog
    from app.pipelines.device import resolve_runtime
    from app.pipelines.registry import ModelRegistry

    settings = Settings()
    registry = ModelRegistry(settings.models_dir,
                             settings.embedded_dir / settings.embedded_model_id,
                             settings.embedded_model_id, resolve_runtime("cpu"),
                             settings.default_model)
    registry.refresh()
    loras = LoraCatalog(settings.models_dir)
    loras.refresh()
    return registry, loras


@models_cli.command("list")
def list_models() -> None:
    """List the models the registry discovers (builds the embedded one if missing)."""
    registry, _ = _registry()
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
    from app.errors import BildwerkError
    from app.pipelines.merge import merge
    from app.schemas.models import MergeRequest
    from app.services.models import ModelService

    registry, loras = _registry()
    refs = [{"name": item.split(":")[0], "weight": float(item.split(":")[1])}
            if ":" in item else {"name": item} for item in lora]
    try:
        req = MergeRequest(a=a, b=b, c=c, method=method, alpha=alpha, name=name, loras=refs)
        spec = ModelService(registry, loras, None, 0).merge_spec(req)  # type: ignore[arg-type]
        path = merge(spec, registry.models_dir)
    except BildwerkError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
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
    """Append N expanded prompts to a CSV (title, description, metatags, prompt) or JSONL
    file, like the seed tool's `main.py N --only-prompts`. Each batch is recorded in the
    database like a POST /prompt-expand."""
    import secrets
    from pathlib import Path

    from app.config import Settings
    from app.errors import BildwerkError
    from app.persistence.database import Database
    from app.persistence.records import RecordRepository
    from app.prompting.exports import append_csv, append_jsonl
    from app.prompting.ideas import suggest_ideas
    from app.schemas.prompts import MAX_PROMPTS, PromptExpandRequest
    from app.services.prompting import build_prompt_service

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    service = build_prompt_service(settings, RecordRepository(db))
    path = Path(out)
    append = append_jsonl if path.suffix.lower() == ".jsonl" else append_csv
    first = seed if seed is not None else secrets.randbelow(2**31)
    written = 0
    try:
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
            written += append(path, result["prompts"])
            typer.echo(f"{written}/{n} prompts ({result['provider']}), record "
                       f"{result['record_id']}", err=True)
    except (BildwerkError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    typer.echo(f"appended {written} prompts to {path}")


keys_cli = typer.Typer(help="Manage API keys (stored hashed; the secret is shown once).",
                       no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


def _key_repository():
    from app.config import Settings
    from app.persistence.database import Database
    from app.security.keys import ApiKeyRepository

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db, ApiKeyRepository(db)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@keys_cli.command("create")
def create_key(
    name: str = typer.Argument(..., help="Who or what uses the key, e.g. blender-studio-3."),
    scope: list[str] = typer.Option([], "--scope", help="generate, read or admin (admin "
                                    "implies the others). Repeat for several."),
) -> None:
    """Create a key and print its secret (once: only its hash is stored)."""
    from app.errors import BildwerkError

    db, keys = _key_repository()
    try:
        key, secret = keys.create(name, [s.strip().lower() for s in scope])
    except BildwerkError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    typer.echo(f"created key {key.id} ({key.name}; scopes: {', '.join(key.scopes)}). "
               "Store the secret now, it is not shown again:", err=True)
    typer.echo(secret)


@keys_cli.command("list")
def list_keys() -> None:
    """Every key: id, name, scopes, created, last used, revoked (never the secret)."""
    db, keys = _key_repository()
    try:
        rows = keys.list()
    finally:
        db.dispose()
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
    from app.errors import BildwerkError

    db, keys = _key_repository()
    try:
        key = keys.revoke(key_id.strip())
    except BildwerkError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    typer.echo(f"revoked key {key.id} ({key.name}) at {_when(key.revoked_at)}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
