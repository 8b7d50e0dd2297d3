"""The OpenAI Images API under ``/v1`` (``images.generate``, ``images.edit``,
``images.create_variation``, ``models.list``/``retrieve``), so the ``openai`` SDK works
unchanged against Bildwerk. See docs/compat-openai.md.

- ``routes``: the routers (thin: read, translate, call the services, answer);
- ``translate``: OpenAI requests -> our request models; ``masks``: OpenAI's alpha-0 area;
- ``options``: size, quality -> steps, output formats; ``schemas``: the wire shapes;
- ``answers``/``streaming``: ``ImagesResponse`` and the SSE events; ``forms``: multipart;
- ``errors``: OpenAI's error envelope, registered as the ``/v1/`` error dialect.
"""
