"""API keys, scopes and ownership: who may call which route, and see whose results."""
