"""Joining the Ray cluster and deploying the Generator application.

``bildwerk ray deploy`` deploys (or updates) it explicitly; an ingress started with
``BILDWERK_EXECUTOR=ray`` deploys it only when it is not running yet, so several ingresses
share one set of replicas.
"""

from __future__ import annotations

import logging
import os

from app.config import Settings

log = logging.getLogger("bildwerk.ray")
NAMESPACE = "bildwerk"


def connect(settings: Settings) -> None:
    """Join the cluster at ``BILDWERK_RAY_ADDRESS`` (once per process)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False,
             logging_level=logging.WARNING)


def deploy(settings: Settings, registry):
    """Deploy (or update) the Generator application; returns its handle once its replicas
    are up."""
    from ray import serve

    from app.cluster.generator import generator_deployment, models_per_replica

    connect(settings)
    # Ingresses reach the replicas through handles: no HTTP proxy unless one was started
    # for the Serve ingress (bildwerk ray deploy --ingress); Serve keeps what it first got.
    serve.start(proxy_location="Disabled")
    models = models_per_replica(settings, registry)
    app = generator_deployment(settings, models).bind(settings)
    log.info("deploying Ray Serve application %r (%d model(s) per replica)",
             settings.ray_app_name, models)
    return serve.run(app, name=settings.ray_app_name, route_prefix=None)


def generator_handle(settings: Settings, registry):
    """The handle of the running Generator deployment, deploying it first if needed."""
    from ray import serve

    try:
        status = serve.status().applications.get(settings.ray_app_name)
    except Exception:
        status = None
    if status is None or str(status.status).endswith("DEPLOY_FAILED"):
        return deploy(settings, registry)
    return serve.get_deployment_handle("Generator", app_name=settings.ray_app_name)


def replicas_running(settings: Settings) -> int:
    """Generator replicas in the RUNNING state (0 when the application is missing)."""
    from ray import serve

    app = serve.status().applications.get(settings.ray_app_name)
    if app is None:
        return 0
    deployment = app.deployments.get("Generator")
    if deployment is None:
        return 0
    return int(deployment.replica_states.get("RUNNING", 0))


def shutdown_application(settings: Settings) -> None:
    """Remove the Generator application, and the Serve ingress if deployed (``bildwerk ray
    down``)."""
    from ray import serve

    connect(settings)
    apps = serve.status().applications
    for name in (f"{settings.ray_app_name}-ingress", settings.ray_app_name):
        if name in apps:
            serve.delete(name)
