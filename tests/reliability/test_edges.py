"""Edges a review found: control characters in URLs, out-of-range time filters, oversized
streamed bodies on routes FastAPI parses itself, the scope checked before the rate limit,
and a typed prompt that looks like the record's blend notation. None may be a 500."""

from __future__ import annotations

from app.services.results import _split_blend
from tests.security.conftest import bearer, make_key


def test_a_nul_in_a_path_or_query_is_a_422_on_every_database(client):
    for method, url in (("GET", "/jobs/a%00b"), ("DELETE", "/jobs/a%00b"),
                        ("GET", "/records/a%00b"), ("GET", "/records?endpoint=%00"),
                        ("GET", "/blobs/a%00b"), ("POST", "/records/a%00b/feedback")):
        r = client.request(method, url, json={"rating": 3} if method == "POST" else None)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["code"] == "invalid_input"
    assert client.get("/health").status_code == 200


def test_time_filters_beyond_the_calendar_are_a_422(client):
    for query in ("since=0001-01-01T00:00:00%2B01:00", "until=9999-12-31T23:59:59-01:00"):
        r = client.get(f"/records?{query}")
        assert r.status_code == 422, (query, r.text)
        assert r.json()["error"]["code"] == "invalid_input"


def test_an_oversized_streamed_body_is_413_on_every_route(make_client):
    client = make_client(max_body_bytes=2048)

    def chunks():
        yield b'{"idea": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    for path in ("/prompt-expand", "/inpainting/", "/txt2img"):
        r = client.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, (path, r.text)
        assert r.json()["error"]["code"] == "payload_too_large"


def test_a_read_only_key_gets_403_from_prompt_expand_before_any_rate_limit(make_client):
    client = make_client(rate_limit="1/minute")
    _, reader = make_key(client, "dashboard", "read")
    for _ in range(3):
        r = client.post("/prompt-expand", json={"idea": "a castle"}, headers=bearer(reader))
        assert r.status_code == 403, r.text
    _, writer = make_key(client, "kiosk", "generate")
    assert client.post("/prompt-expand", json={"idea": "a castle"},
                       headers=bearer(writer)).status_code == 200
    assert client.get("/styles", headers=bearer(reader)).status_code == 200


def test_a_typed_prompt_like_the_blend_notation_reads_back_as_typed():
    assert _split_blend("cat -> dog @ home") == ("cat -> dog @ home", None, 0.0)
    assert _split_blend("cat -> dog @ 2") == ("cat -> dog @ 2", None, 0.0)
    assert _split_blend("a castle -> a ruin @ 0.2500") == ("a castle", "a ruin", 0.25)
