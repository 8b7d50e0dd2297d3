"""Per-key ownership: a key without admin sees only its own records, jobs and blobs;
another key's are 404 (as if they did not exist); admin sees everything."""

from __future__ import annotations

import json
import time

from tests.security.conftest import bearer, make_key
from tests.utils.images import box_mask, data_url, scene

FAST = {"prompt": "a windmill", "steps": 2, "width": 64, "height": 64, "seed": 3}
ASYNC = {"Prefer": "respond-async"}


def blobs_of(record: dict) -> list[str]:
    named = [record["input_image_sha256"], record["mask_sha256"],
             record["mask_applied_sha256"], *(o["sha256"] for o in record["outputs"])]
    return [sha for sha in named if sha]


def test_records_jobs_and_blobs_belong_to_their_key(client, remote):
    a_id, a = make_key(client, "studio-a", "generate", "read")
    b_id, b = make_key(client, "studio-b", "generate", "read")
    _, admin = make_key(client, "ops", "admin")
    outside = remote(client)

    image, mask = scene(64, 64), box_mask((64, 64), (8, 8, 30, 30))
    r = outside.post("/inpaint", headers=bearer(a),
                     json={**FAST, "image": data_url(image), "mask": data_url(mask)})
    assert r.status_code == 200, r.text
    job_id, record_id = r.json()["job_id"], r.json()["record_id"]
    assert outside.post("/txt2img", json=FAST, headers=bearer(b)).status_code == 200

    mine = outside.get(f"/records/{record_id}", headers=bearer(a))
    assert mine.status_code == 200
    record = mine.json()
    assert record["api_key_id"] == a_id
    assert record["client"]["key_id"] == a_id and record["client"]["key_name"] == "studio-a"
    assert a not in mine.text and a[3:] not in mine.text  # never the secret
    shas = blobs_of(record)
    assert len(shas) == 4  # input, mask as sent, mask as applied, output

    # Key B (generate + read): everything of A's is 404, exactly like an unknown id.
    for path in (f"/records/{record_id}", f"/jobs/{job_id}", f"/jobs/{job_id}/events",
                 *(f"/blobs/{sha}" for sha in shas)):
        got = outside.get(path, headers=bearer(b))
        assert got.status_code == 404, (path, got.text)
        assert got.json()["error"]["code"] == "not_found"
    assert outside.delete(f"/jobs/{job_id}", headers=bearer(b)).status_code == 404  # not 409
    listed = outside.get("/records", headers=bearer(b)).json()
    assert listed["total"] == 1 and {i["api_key_id"] for i in listed["items"]} == {b_id}

    # Key A lists only its own, and gets its job and every blob its record names.
    listed = outside.get("/records", headers=bearer(a)).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == record_id
    assert outside.get(f"/jobs/{job_id}", headers=bearer(a)).json()["status"] == "succeeded"
    events = outside.get(f"/jobs/{job_id}/events", headers=bearer(a))
    assert events.status_code == 200 and "succeeded" in events.text
    assert outside.delete(f"/jobs/{job_id}", headers=bearer(a)).status_code == 409
    for sha in shas:
        blob = outside.get(f"/blobs/{sha}", headers=bearer(a))
        assert blob.status_code == 200
        assert blob.headers["cache-control"].startswith("private")

    # Admin sees everything.
    assert outside.get("/records", headers=bearer(admin)).json()["total"] == 2
    assert outside.get(f"/records/{record_id}", headers=bearer(admin)).status_code == 200
    assert outside.get(f"/jobs/{job_id}", headers=bearer(admin)).status_code == 200
    assert all(outside.get(f"/blobs/{sha}", headers=bearer(admin)).status_code == 200
               for sha in shas)


def test_a_generate_only_key_fetches_the_blobs_its_results_name(client, remote):
    _, blender = make_key(client, "blender", "generate")
    _, other = make_key(client, "other", "generate")
    outside = remote(client)
    body = outside.post("/txt2img", json={**FAST, "num_images": 2},
                        headers=bearer(blender)).json()
    for image in body["images"]:
        assert outside.get(image["url"], headers=bearer(blender)).status_code == 200
        assert outside.get(image["url"], headers=bearer(other)).status_code == 404


def test_frames_of_a_running_sequence_are_the_owners_at_once(client, remote):
    """A sequence's frames reach its record when it ends; its owner follows them live."""
    _, a = make_key(client, "a", "generate")
    _, b = make_key(client, "b", "generate", "read")
    outside = remote(client)
    slow = {"image": data_url(scene(64, 64, seed=5)), "prompt": "a harbour", "frames": 40,
            "steps": 30, "strength": 1.0, "width": 128, "height": 128, "seed": 9}
    r = outside.post("/img2seq", json=slow, headers={**ASYNC, **bearer(a)})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = client.app.state.jobs.get(job_id)
    try:
        deadline = time.monotonic() + 60
        while not job.frame_events and not job.finished and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.frame_events and not job.finished
        sha = job.frame_events[0]["sha256"]
        assert outside.get(f"/blobs/{sha}", headers=bearer(a)).status_code == 200
        assert outside.get(f"/blobs/{sha}", headers=bearer(b)).status_code == 404
    finally:
        outside.delete(f"/jobs/{job_id}", headers=bearer(a))
    assert wait_for_job(client.app.state.jobs, job_id)["status"] == "cancelled"
    assert outside.get(f"/blobs/{sha}", headers=bearer(a)).status_code == 200  # recorded now


def wait_for_job(jobs, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while (status := jobs.status(job_id))["status"] not in ("succeeded", "failed",
                                                             "cancelled"):
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    return status


def test_keyless_loopback_records_name_no_key(client):
    body = client.post("/txt2img", json=FAST).json()
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["api_key_id"] is None and record["client"]["key_id"] is None
    assert json.dumps(record).count("bw_") == 0


def test_a_key_may_name_only_its_own_blobs_as_an_input_image(client, remote):
    _, a = make_key(client, "studio-a", "generate")
    _, b = make_key(client, "studio-b", "generate")
    _, admin = make_key(client, "ops", "admin")
    outside = remote(client)
    made = outside.post("/txt2img", json=FAST, headers=bearer(a)).json()
    sha = made["images"][0]["sha256"]
    mask = data_url(box_mask((64, 64), (8, 8, 30, 30)))
    body = {**FAST, "image": sha, "mask": mask}
    theirs = outside.post("/inpaint", json=body, headers=bearer(b))
    assert theirs.status_code == 422 and theirs.json()["error"]["param"] == "image"
    assert "no stored blob" in theirs.json()["error"]["message"]
    assert outside.post("/inpaint", json=body, headers=bearer(a)).status_code == 200
    assert outside.post("/inpaint", json=body, headers=bearer(admin)).status_code == 200
