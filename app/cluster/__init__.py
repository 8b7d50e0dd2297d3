"""Bildwerk on several processes: the Ray executor (:mod:`app.cluster.ray_executor`), its
Generator deployment (:mod:`app.cluster.generator`), and the checks every ingress of a
cluster makes at startup (:mod:`app.cluster.checks`). Events and leases shared across
processes live in :mod:`app.jobs.bus` and :mod:`app.jobs.leases`."""
