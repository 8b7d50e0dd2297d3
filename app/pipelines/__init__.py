"""Local diffusers execution: device choice, schedulers, the model registry, and the
small pipeline classes that run one request each."""
