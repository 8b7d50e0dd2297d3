"""POST /records/{id}/feedback: ratings, flags and comments on records, the filters on
GET /records that use them, and who may give feedback on which record."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.security.conftest import REMOTE, bearer, make_key

FAST = {"prompt": "a windmill", "steps": 2, "width": 64, "height": 64, "seed": 21}


def make_record(client, headers: dict | None = None, **overrides) -> str:
    r = client.post("/txt2img", json={**FAST, **overrides}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()["record_id"]


def feedback(client, record_id: str, body: dict, headers: dict | None = None):
    return client.post(f"/records/{record_id}/feedback", json=body, headers=headers or {})


def ids(page: dict) -> set[str]:
    return {item["id"] for item in page["items"]}


def test_feedback_is_stored_with_the_record_and_a_later_one_replaces_it(client):
    record_id = make_record(client)
    assert client.get(f"/records/{record_id}").json()["feedback"] is None

    r = feedback(client, record_id, {"rating": 4, "flags": ["good", "use_for_training", "good"],
                                     "comment": "Der See liegt richtig."})
    assert r.status_code == 200, r.text
    answered = r.json()
    assert answered["id"] == record_id and answered["status"] == "succeeded"
    given = answered["feedback"]
    assert given["rating"] == 4 and given["flags"] == ["good", "use_for_training"]
    assert given["comment"] == "Der See liegt richtig."
    assert given["key_id"] is None  # a keyless loopback caller (admin)
    assert given["at"].endswith(("Z", "+00:00"))
    assert client.get(f"/records/{record_id}").json()["feedback"] == given

    again = feedback(client, record_id, {"flags": ["artifact"]}).json()["feedback"]
    assert again["rating"] is None and again["comment"] is None  # replaced as a whole
    assert again["flags"] == ["artifact"] and again["at"] >= given["at"]
    assert client.get(f"/records/{record_id}").json()["feedback"] == again


def test_invalid_feedback_is_a_422_envelope_naming_the_field(client):
    record_id = make_record(client)
    cases = [
        ({"rating": 0}, "rating"), ({"rating": 6}, "rating"), ({"rating": "great"}, "rating"),
        ({"rating": 3.5}, "rating"),
        ({"flags": ["Good"]}, "flags.0"), ({"flags": ["ok", "with space"]}, "flags.1"),
        ({"flags": ["x" * 33]}, "flags.0"), ({"flags": [f"f{i}" for i in range(17)]}, "flags"),
        ({"flags": "good"}, "flags"), ({"comment": "x" * 2001}, "comment"),
        ({"rating": 3, "mood": "happy"}, "mood"), ({"comment": "a\x00b"}, None),
        ({}, None), ({"rating": None, "flags": [], "comment": None}, None),
    ]
    for body, param in cases:
        r = feedback(client, record_id, body)
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_input" and error["param"] == param, (body, error)
    assert client.get(f"/records/{record_id}").json()["feedback"] is None  # nothing stored
    assert client.post(f"/records/{record_id}/feedback", content=b"\xff\xfe",
                       headers={"content-type": "application/json"}).status_code in (400, 422)

    unknown = feedback(client, "00000000-0000-4000-8000-000000000000", {"rating": 3})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    # Exactly at the limits is fine.
    assert feedback(client, record_id, {"rating": 1, "comment": "x" * 2000, "flags": [
        "a" * 32, *[f"f{i}" for i in range(15)]]}).status_code == 200


def test_filters_min_rating_flag_and_has_feedback(client):
    best, fine, bad, lookalike, unrated = (make_record(client, seed=s) for s in range(5))
    for record_id, body in ((best, {"rating": 5, "flags": ["good", "use_for_training"]}),
                            (fine, {"rating": 3, "flags": ["use_for_training"]}),
                            (bad, {"rating": 1, "flags": ["bad", "exclude"]}),
                            (lookalike, {"flags": ["usexforxtraining", "goods"]})):
        assert feedback(client, record_id, body).status_code == 200

    def listed(**params) -> set[str]:
        r = client.get("/records", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["items"])
        return ids(r.json())

    assert listed(min_rating=3) == {best, fine}
    assert listed(min_rating=1) == {best, fine, bad}
    assert listed(flag="use_for_training") == {best, fine}  # "_" is not a wildcard
    assert listed(flag=["use_for_training", "good"]) == {best}  # all must be present
    assert listed(flag="good") == {best}  # not "goods"
    assert listed(flag="exclude") == {bad}
    assert listed(flag="nsfw") == set()
    assert listed(has_feedback=True) == {best, fine, bad, lookalike}
    assert listed(has_feedback=False) == {unrated}
    assert listed(min_rating=4, flag="good", has_feedback=True, endpoint="txt2img",
                  status="succeeded") == {best}

    for params, param in (({"min_rating": 0}, "min_rating"), ({"min_rating": 6}, "min_rating"),
                          ({"flag": "Use"}, "flag.0"), ({"has_feedback": "maybe"}, "has_feedback")):
        r = client.get("/records", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["param"] == param, (params, r.json())


def test_a_key_gives_feedback_on_its_own_records_only(client):
    a_id, a = make_key(client, "kiosk-staff", "generate")
    b_id, b = make_key(client, "studio-b", "generate", "read")
    _, reader = make_key(client, "reader", "read")
    admin_id, admin = make_key(client, "ops", "admin")
    outside = TestClient(client.app, client=REMOTE)  # not loopback: keys are needed
    mine = make_record(outside, bearer(a))
    theirs = make_record(outside, bearer(b), seed=7)

    for secret in (b, reader):  # another key's record: 404, exactly like an unknown id
        r = feedback(outside, mine, {"rating": 1}, bearer(secret))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = feedback(outside, mine, {"rating": 5, "flags": ["good"]}, bearer(a))  # generate only
    assert r.status_code == 200, r.text
    assert r.json()["feedback"]["key_id"] == a_id and r.json()["api_key_id"] == a_id
    assert outside.get(f"/records/{mine}", headers=bearer(a)).status_code == 403  # no read
    assert outside.get("/records", headers=bearer(a)).status_code == 403

    own = feedback(outside, theirs, {"rating": 2}, bearer(b))
    assert own.status_code == 200 and own.json()["feedback"]["key_id"] == b_id
    assert ids(outside.get("/records", params={"has_feedback": True},
                           headers=bearer(b)).json()) == {theirs}  # not A's

    by_admin = feedback(outside, mine, {"rating": 3}, bearer(admin))
    assert by_admin.status_code == 200
    assert by_admin.json()["feedback"] == {**by_admin.json()["feedback"], "rating": 3,
                                           "key_id": admin_id}
    assert by_admin.json()["api_key_id"] == a_id  # still A's record
    assert feedback(outside, mine, {"rating": 3}).status_code == 401  # no key at all


def test_the_record_of_a_failed_request_can_be_rated(client):
    assert client.post("/txt2img", json={**FAST, "model": "broken"}).status_code == 500
    failed = client.get("/records", params={"status": "failed"}).json()["items"]
    assert len(failed) == 1
    r = feedback(client, failed[0]["id"], {"rating": 1, "flags": ["bad"],
                                           "comment": "the model did not load"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed" and r.json()["feedback"]["flags"] == ["bad"]
    assert ids(client.get("/records", params={"flag": "bad"}).json()) == {failed[0]["id"]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_openapi_examples_run_as_they_are(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/records/{record_id}/feedback"]["post"]
    assert operation["summary"] and "200" in operation["responses"]
    assert "404" in operation["responses"] and "403" in operation["responses"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert examples
    record_id = make_record(client)
    for name, example in examples.items():
        r = feedback(client, record_id, example["value"])
        assert r.status_code == 200, (name, r.text)
        stored = r.json()["feedback"]
        for field, value in example["value"].items():
            assert stored[field] == value, (name, field)
    listing = spec["paths"]["/records"]["get"]["parameters"]
    assert {"min_rating", "flag", "has_feedback"} <= {p["name"] for p in listing}
