"""AUTOMATIC1111's web API (``/sdapi/v1``) on Bildwerk's services.

Each route translates an AUTOMATIC1111 request into our own request model and calls the
service the native route calls (:class:`~app.services.generation.GenerationService`, the
upscale service), so every call is a normal recorded job; the answer is translated back
into AUTOMATIC1111's shape (raw base64 PNGs, ``info`` as a JSON string, errors as its API
middleware writes them). What is honoured and what is ignored: ``docs/compat-a1111.md``.

- :mod:`.schemas`: the request and response models (unknown fields are ignored),
- :mod:`.samplers`: AUTOMATIC1111 sampler and schedule names to our schedulers,
- :mod:`.translate`: requests into ours (LoRA tags, sizes, seeds, inpaint options),
- :mod:`.checkpoints`: checkpoint titles (``name.safetensors [hash]``) and look-ups,
- :mod:`.infotext`: ``info``, infotexts and the PNG-info parser,
- :mod:`.service`: this API's state (options, its jobs) and the calls,
- :mod:`.routes`: the thin router, :mod:`.errors`: the error dialect.
"""
