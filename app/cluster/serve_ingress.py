"""Bildwerk's FastAPI app as a Ray Serve ingress deployment (``bildwerk ray deploy
--ingress N``): Ray's HTTP proxy on every node serves the API, and each ``Ingress`` replica
runs the whole app (its lifespan included) with the Ray executor, sharing PostgreSQL and
Redis like any other ingress. The alternative, documented in docs/deploy.md, is
``bildwerk serve`` (uvicorn) on any number of hosts behind a load balancer."""

from __future__ import annotations

from app.config import Settings


def ingress_deployment(settings: Settings, replicas: int):
    """The ``Ingress`` deployment; the app is built on each replica (a builder function),
    never pickled."""
    from ray import serve

    settings = settings.model_copy(update={"executor": "ray"})

    def build_app():
        from app.main import create_app

        return create_app(settings)

    ingress = serve.ingress(build_app)(type("Ingress", (), {}))
    return serve.deployment(name="Ingress", num_replicas=replicas,
                            ray_actor_options={"num_cpus": 0.25},
                            max_ongoing_requests=256)(ingress)


def start_proxy(settings: Settings, *, host: str, port: int) -> None:
    """Start Serve with its HTTP proxy at ``host``:``port``. Call it before anything else
    deploys: Serve keeps the address it first started with on the cluster."""
    from ray import serve

    from app.cluster.deploy import connect

    connect(settings)
    serve.start(http_options={"host": host, "port": port})


def deploy_ingress(settings: Settings, replicas: int):
    """Deploy the ingress application (``<app name>-ingress``) at ``/`` on Ray's HTTP
    proxy."""
    from ray import serve

    app = ingress_deployment(settings, replicas).bind()
    return serve.run(app, name=f"{settings.ray_app_name}-ingress", route_prefix="/")
