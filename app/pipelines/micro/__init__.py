"""The shipped micro model (bildwerk-micro), the embedded default; see its README.md."""
