"""Application builders for Ray Serve's config files (``serve deploy`` / ``serve run`` and
KubeRay's ``RayService``): ``import_path: app.cluster.serve_app:generator`` (the Generator
replicas) and ``app.cluster.serve_app:ingress`` (the API behind Ray's HTTP proxy).

Both read the settings from the environment (``BILDWERK_*``, set in the RayService's pod
templates or the ``runtime_env``), like ``bildwerk serve``. Serve's ``args`` may override
settings by name, e.g. ``args: {ray_max_replicas: 4}``.
"""

from __future__ import annotations

from app.config import Settings


def _settings(args: dict | None) -> Settings:
    return Settings(**{"executor": "ray", **(args or {})})


def generator(args: dict | None = None):
    """The Generator deployment, bound: one replica per GPU (``BILDWERK_RAY_NUM_GPUS=1``),
    ``BILDWERK_RAY_MODELS_PER_REPLICA`` checkpoints each (1 when left at 0: the builder does
    not scan the models)."""
    from app.cluster.generator import generator_deployment

    settings = _settings(args)
    return generator_deployment(settings, settings.ray_models_per_replica or 1).bind(settings)


def ingress(args: dict | None = None):
    """The API as an ``Ingress`` deployment (``replicas`` from ``args``, default 2)."""
    from app.cluster.serve_ingress import ingress_deployment

    args = dict(args or {})
    replicas = int(args.pop("replicas", 2))
    return ingress_deployment(_settings(args), replicas).bind()
