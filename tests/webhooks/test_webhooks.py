"""Webhooks through the HTTP API: signed deliveries a Standard Webhooks verifier accepts,
retries against a flaky receiver, a dead receiver that never fails the job, cancel,
refused private addresses, the delivery log and who may read it.

Every request goes to a receiver on 127.0.0.1 (allowed with
``webhook_allowed_hosts=["127.0.0.1"]``); nothing else is ever contacted.
"""

from __future__ import annotations

import json

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.webhooks import validation
from tests.conftest import wait_for_job
from tests.security.conftest import bearer, make_key
from tests.utils.images import data_url, scene
from tests.webhooks.receiver import wait_until

ASYNC = {"Prefer": "respond-async"}
FAST = {"prompt": "a harbour", "steps": 4, "width": 64, "height": 64, "seed": 2}
SLOW = {"prompt": "a long job", "steps": 150, "width": 256, "height": 256, "seed": 3}
LOCAL = {"webhook_allowed_hosts": ["127.0.0.1"], "webhook_backoff_s": 0.05}


def secret_of(client, key_id: str | None) -> str:
    return client.app.state.services.webhooks.secrets.secret_for(key_id)


def log_of(client, job_id: str, headers: dict | None = None) -> list[dict]:
    r = client.get(f"/jobs/{job_id}/webhooks", headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.json()["job_id"] == job_id
    return r.json()["deliveries"]


def wait_log(client, job_id: str, count: int, headers: dict | None = None) -> list[dict]:
    return wait_until(lambda: (log := log_of(client, job_id, headers)) and
                      len(log) >= count and log, 60, f"{count} logged attempts")


def test_started_and_completed_arrive_signed_with_the_keys_secret(make_client, receiver):
    client = make_client(**LOCAL)
    hook = receiver()
    key_id, api_key = make_key(client, "studio", "generate")
    r = client.post("/txt2img", headers=bearer(api_key),
                    json={**FAST, "webhook": {"url": hook.url}})
    assert r.status_code == 200, r.text
    result = r.json()
    got = hook.wait_for(2)

    secret = secret_of(client, key_id)
    assert secret.startswith("whsec_")
    payloads = [Webhook(secret).verify(g.body, g.headers) for g in got]
    assert [p["type"] for p in payloads] == ["job.started", "job.completed"]
    assert all(g.path == "/hook" and g.headers["content-type"] == "application/json"
               for g in got)
    assert len({g.headers["webhook-id"] for g in got}) == 2
    started, completed = (p["data"] for p in payloads)
    assert started["job_id"] == completed["job_id"] == result["job_id"]
    assert started["record_id"] == completed["record_id"] == result["record_id"]
    assert started["status"] == "running" and started["endpoint"] == "txt2img"
    assert completed["status"] == "succeeded" and completed["error"] is None
    assert [(o["sha256"], o["url"]) for o in completed["outputs"]] == [
        (i["sha256"], i["url"]) for i in result["images"]]
    assert all(p["timestamp"].endswith("Z") for p in payloads)

    # Signed with this key's secret, not the keyless one (nor anyone else's).
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_of(client, None)).verify(got[0].body, got[0].headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got[0].body.replace(b"running", b"runnin!"), got[0].headers)

    log = wait_log(client, result["job_id"], 2, bearer(api_key))
    assert [(d["event"], d["attempt"], d["ok"], d["status_code"]) for d in log] == [
        ("started", 1, True, 200), ("completed", 1, True, 200)]
    assert [d["message_id"] for d in log] == [g.headers["webhook-id"] for g in got]
    assert all(d["error"] is None and d["next_attempt_at"] is None for d in log)
    assert all(d["attempted_at"] <= d["finished_at"] for d in log)


def test_a_flaky_receiver_gets_the_delivery_on_the_third_attempt(make_client, receiver):
    client = make_client(**LOCAL)
    hook = receiver(fail_first=2)
    r = client.post("/txt2img", json={**FAST, "webhook": {"url": hook.url,
                                                          "events": ["completed"]}})
    assert r.status_code == 200, r.text
    got = hook.wait_for(3)
    assert len({g.headers["webhook-id"] for g in got}) == 1  # one message, three attempts
    secret = secret_of(client, None)  # no key: the server's keyless secret
    for g in got:
        assert Webhook(secret).verify(g.body, g.headers)["type"] == "job.completed"

    log = wait_log(client, r.json()["job_id"], 3)
    assert [(d["event"], d["attempt"], d["ok"], d["status_code"]) for d in log] == [
        ("completed", 1, False, 500), ("completed", 2, False, 500),
        ("completed", 3, True, 200)]
    assert log[0]["error"] == "HTTP 500"
    assert log[0]["next_attempt_at"] is not None and log[2]["next_attempt_at"] is None


def test_a_receiver_that_always_fails_never_fails_the_job(make_client, receiver):
    client = make_client(**LOCAL, webhook_max_attempts=3)
    hook = receiver(always_fail=True, status=503)
    r = client.post("/txt2img", json={**FAST, "webhook": {"url": hook.url}})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    log = wait_log(client, job_id, 6)  # started and completed, three attempts each
    assert [(d["event"], d["attempt"]) for d in log] == [
        ("started", 1), ("started", 2), ("started", 3),
        ("completed", 1), ("completed", 2), ("completed", 3)]
    assert not any(d["ok"] for d in log) and {d["status_code"] for d in log} == {503}
    assert log[2]["next_attempt_at"] is None and log[5]["next_attempt_at"] is None
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    assert client.get(f"/records/{r.json()['record_id']}").json()["status"] == "succeeded"
    assert len(hook.requests) == 6


def test_an_unreachable_receiver_is_logged_with_the_error(make_client, receiver):
    client = make_client(**LOCAL, webhook_max_attempts=2)
    hook = receiver()
    url = hook.url
    hook.close()  # nothing listens there any more: connection refused
    r = client.post("/txt2img", json={**FAST, "webhook": {"url": url,
                                                          "events": ["completed"]}})
    assert r.status_code == 200, r.text
    log = wait_log(client, r.json()["job_id"], 2)
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in log] == [
        (1, False, None), (2, False, None)]
    assert all(d["error"] for d in log)


def test_cancelled_jobs_send_cancelled(make_client, receiver):
    client = make_client(**LOCAL)
    hook = receiver()
    webhook = {"url": hook.url}
    running = client.post("/txt2img", json={**SLOW, "webhook": webhook},
                          headers=ASYNC).json()["job_id"]
    queued = client.post("/txt2img", json={**FAST, "webhook": webhook},
                         headers=ASYNC).json()["job_id"]
    wait_for_job(client, running, until=lambda s: s["progress"]["step"] >= 2)
    assert client.delete(f"/jobs/{queued}").json()["status"] == "cancelled"
    assert client.delete(f"/jobs/{running}").status_code == 200
    assert wait_for_job(client, running)["status"] == "cancelled"
    got = hook.wait_for(3)
    secret = secret_of(client, None)
    events = [(p["data"]["job_id"], p["type"], p["data"]) for p in
              (Webhook(secret).verify(g.body, g.headers) for g in got)]
    assert [(j, t) for j, t, _ in events if j == running] == [
        (running, "job.started"), (running, "job.cancelled")]
    assert [(j, t) for j, t, _ in events if j == queued] == [(queued, "job.cancelled")]
    for _, kind, data in events:
        if kind == "job.cancelled":
            assert data["status"] == "cancelled" and data["error"]["code"] == "cancelled"
    assert [d["event"] for d in wait_log(client, queued, 1)] == ["cancelled"]


REFUSED = ["http://10.0.0.1/hook", "http://127.0.0.1:9/hook",
           "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/hook",
           "https://localhost:9/hook"]


def test_private_loopback_and_link_local_urls_are_refused(client):
    for url in REFUSED:
        r = client.post("/txt2img", json={**FAST, "webhook": {"url": url}})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["param"] == "webhook.url", url
    image = data_url(scene(64, 64))
    for path, body in (("/upscale", {"image": image}),
                       ("/img2seq", {"image": image, "prompt": "x", "frames": 2,
                                     "steps": 2})):
        r = client.post(path, json={**body, "webhook": {"url": REFUSED[0]}})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["param"] == "webhook.url"
    r = client.post("/img2img", data={"prompt": "x", "steps": "2",
                                      "webhook": json.dumps({"url": REFUSED[2]})},
                    files={"image": ("in.png", _png(), "image/png")})
    assert r.status_code == 422 and r.json()["error"]["param"] == "webhook.url", r.text
    for bad in ("ftp://example.com/x", "not a url", "http:///nohost"):
        r = client.post("/txt2img", json={**FAST, "webhook": {"url": bad}})
        assert r.status_code == 422 and r.json()["error"]["param"] == "webhook.url", bad
    # Nothing was queued; every refusal was recorded.
    page = client.get("/records", params={"limit": 100}).json()
    assert page["total"] == len(REFUSED) + 3 + 3
    assert {item["status"] for item in page["items"]} == {"rejected"}
    assert {item["error_code"] for item in page["items"]} == {"invalid_input"}


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    scene(64, 64).save(buffer, format="PNG")
    return buffer.getvalue()


def test_allowed_hosts_are_matched_as_written(make_client):
    client = make_client(webhook_allowed_hosts=["127.0.0.1"])
    r = client.post("/txt2img", json={**FAST, "webhook": {"url": "http://localhost:9/"}},
                    headers=ASYNC)
    assert r.status_code == 422 and r.json()["error"]["param"] == "webhook.url"
    r = client.post("/txt2img", json={**FAST, "webhook": {"url": "http://[::1]:9/"}},
                    headers=ASYNC)
    assert r.status_code == 422


def test_the_delivery_log_is_for_the_jobs_owner_only(make_client):
    client = make_client(**LOCAL)
    _, mine = make_key(client, "mine", "generate")
    _, theirs = make_key(client, "theirs", "generate")
    job_id = client.post("/txt2img", json=FAST, headers=bearer(mine)).json()["job_id"]
    assert log_of(client, job_id, bearer(mine)) == []  # no webhook: nothing delivered
    r = client.get(f"/jobs/{job_id}/webhooks", headers=bearer(theirs))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/jobs/00000000-0000-4000-8000-000000000000/webhooks",
                      headers=bearer(mine)).status_code == 404


def test_a_name_that_resolves_elsewhere_at_delivery_time_is_refused(
        make_client, receiver, monkeypatch):
    """DNS rebinding: public at request time, loopback when the delivery is made."""
    client = make_client(**LOCAL, webhook_max_attempts=2)
    hook = receiver()

    async def rebound(url):
        return ["127.0.0.1"]

    monkeypatch.setattr(validation, "resolve_sync", lambda url: ["93.184.216.34"])
    monkeypatch.setattr(validation, "resolve_async", rebound)
    r = client.post("/txt2img", json={**FAST, "webhook": {
        "url": f"http://hooks.example:{hook.port}/hook", "events": ["completed"]}})
    assert r.status_code == 200, r.text
    log = wait_log(client, r.json()["job_id"], 2)
    assert all(not d["ok"] and d["error"].startswith("refused:") for d in log)
    assert hook.requests == []


def test_a_checked_address_is_what_the_sender_connects_to(make_client, receiver,
                                                          monkeypatch):
    """The sender connects to the address it checked, with the URL's Host header."""
    client = make_client(webhook_backoff_s=0.05)
    hook = receiver()

    async def resolved(url):
        return ["127.0.0.1"]

    monkeypatch.setattr(validation, "resolve_sync", lambda url: ["127.0.0.1"])
    monkeypatch.setattr(validation, "resolve_async", resolved)
    monkeypatch.setattr(validation, "refused", lambda address: False)
    r = client.post("/txt2img", json={**FAST, "webhook": {
        "url": f"http://hooks.example:{hook.port}/in", "events": ["completed"]}})
    assert r.status_code == 200, r.text
    (got,) = hook.wait_for(1)
    assert got.path == "/in" and got.headers["host"] == f"hooks.example:{hook.port}"
    assert json.loads(got.body)["type"] == "job.completed"


@pytest.mark.parametrize(("address", "refused"), [
    ("10.0.0.1", True), ("172.16.5.4", True), ("192.168.1.1", True), ("127.0.0.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("::1", True),
    ("fe80::1", True), ("fc00::1", True), ("::ffff:127.0.0.1", True),
    ("64:ff9b::a00:1", True), ("224.0.0.1", True), ("93.184.216.34", False),
    ("2606:4700::1111", False)])
def test_which_addresses_are_refused(address, refused):
    assert validation.refused(address) is refused


def test_allowed_hosts_compare_normalised():
    assert validation.allowed("127.0.0.1", ["127.0.0.1"])
    assert validation.allowed("::1", ["[::1]"])
    assert validation.allowed("Hooks.Internal", ["hooks.internal"])
    assert not validation.allowed("localhost", ["127.0.0.1"])


def test_the_cli_prints_and_rotates_a_keys_webhook_secret(client, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli

    key_id, _ = make_key(client, "studio", "generate")
    settings = client.app.state.settings
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BILDWERK_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, ["keys", "webhook-secret", *args])
        assert result.exit_code == code, result.output
        return result.output.strip()

    first = run(key_id)
    assert first.startswith("whsec_") and run(key_id) == first
    assert first == secret_of(client, key_id)  # what the server signs with
    rotated = run(key_id, "--rotate")
    assert rotated != first and rotated == secret_of(client, key_id)
    assert run("keyless") == secret_of(client, None) != rotated
    assert "not found" in run("no-such-key", code=2)
