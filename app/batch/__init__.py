"""``bildwerk generate``: a batch client of a running Bildwerk server, over HTTP only.

- :mod:`app.batch.inputs` reads the prompts (one prompt, a CSV, JSON Lines or a text
  file, ``bildwerk prompts`` output included) into :class:`BatchItem` requests for
  ``POST /txt2img``.
- :mod:`app.batch.runner` runs them, a few at a time, as async jobs (``Prefer:
  respond-async`` + ``GET /jobs/{id}``), waits out 429/503, and fetches the images.
- :mod:`app.batch.report` keeps the batch folder: the images, ``info.json`` (rewritten
  atomically after every finished item, so an interrupted batch resumes) and ``info.md``.

Nothing here imports the server's services: the client talks to the server only through
its HTTP API, so it works against any Bildwerk, local or remote.
"""

from app.batch.inputs import BatchItem, InputError, read_items, single_item
from app.batch.report import BatchReport
from app.batch.runner import BatchClient, BatchSummary, Fatal, ItemFailed, run_batch

__all__ = ["BatchClient", "BatchItem", "BatchReport", "BatchSummary", "Fatal", "InputError",
           "ItemFailed", "read_items", "run_batch", "single_item"]
