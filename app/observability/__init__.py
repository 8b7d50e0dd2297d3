"""Observability: Prometheus metrics (:mod:`.metrics`, served at ``/metrics`` by
:mod:`app.routers.metrics`) and structured logs (:mod:`.logs`). See docs/observability.md."""
