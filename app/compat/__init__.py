"""Compatibility layers: other servers' APIs translated into Bildwerk's plans and records.

Each layer lives in its own package (``openai_images``: the OpenAI Images API under
``/v1``; ``a1111``: AUTOMATIC1111's ``/sdapi/v1``), speaks its original's dialect (request
and response shapes, error envelope) and calls the same services as the native routes, so
every call is a normal recorded job.
"""
