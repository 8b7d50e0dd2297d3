"""Webhooks: a generation request may carry ``webhook: {url, events}``; the job's events
(``started``, ``progress``, ``completed``, ``failed``, ``cancelled``) are then POSTed to
the URL, signed by the Standard Webhooks spec with the caller's secret, retried with
exponential backoff, and every attempt is logged (``GET /jobs/{id}/webhooks``).

- :mod:`app.webhooks.target`: what travels with a plan (:class:`WebhookTarget`);
- :mod:`app.webhooks.validation`: the URL check (no private, loopback or link-local
  address unless ``BILDWERK_WEBHOOK_ALLOWED_HOSTS`` names the host), at request time in
  planning and again before every attempt (DNS rebinding);
- :mod:`app.webhooks.secrets`: one ``whsec_…`` secret per API key (and one for the callers
  without a key), made on first use;
- :mod:`app.webhooks.log`: the delivery log table;
- :mod:`app.webhooks.payload`: job events into Standard Webhooks payloads;
- :mod:`app.webhooks.sender`: subscribes to a job's events and delivers them off the
  worker thread, on the event loop, with its own httpx client.

See docs/webhooks.md.
"""
