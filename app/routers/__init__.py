"""HTTP routers, one module per resource. Handlers validate, call a service, map to HTTP."""
