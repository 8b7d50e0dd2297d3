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


@cli.command("models")
def list_models() -> None:
    """List the models the registry discovers (builds the embedded one if missing)."""
    from app.config import Settings
    from app.pipelines.device import resolve_runtime
    from app.pipelines.registry import ModelRegistry

    settings = Settings()
    registry = ModelRegistry(settings.models_dir,
                             settings.embedded_dir / settings.embedded_model_id,
                             settings.embedded_model_id, resolve_runtime("cpu"),
                             settings.default_model)
    for entry in registry.refresh():
        mark = "*" if entry.id == registry.default_id else " "
        typer.echo(f"{mark} {entry.id:30s} {entry.family:5s} {entry.variant:8s} "
                   f"{entry.native_resolution}px {entry.format}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
