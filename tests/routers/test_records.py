"""Records: every accepted request is recorded, failures included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.utils.images import box_mask, data_url, decode, scene

FAST = {"prompt": "a windmill", "steps": 3, "width": 64, "height": 64, "seed": 21}


def test_success_is_recorded_with_prompt_parameters_seeds_and_outputs(client):
    body = client.post("/txt2img", json={**FAST, "negative_prompt": "fog",
                                         "num_images": 2}).json()
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["job_id"] == body["job_id"] and record["status"] == "succeeded"
    assert record["endpoint"] == "txt2img" and record["provider"] == "local"
    assert record["model"] == "tiny-sd15" and record["scheduler"] == "euler_a"
    assert record["prompt"] == "a windmill" and record["negative_prompt"] == "fog"
    assert record["prompt_used"] == "a windmill"
    assert record["params"]["steps"] == 3 and record["seeds"] == [21, 22]
    assert [o["seed"] for o in record["outputs"]] == [21, 22]
    assert record["timings"]["inference_s"] > 0
    assert record["client"]["host"]
    assert record["started_at"] and record["finished_at"]


def test_inpaint_records_the_input_the_mask_as_sent_and_as_applied(client):
    image, mask = scene(80, 64), box_mask((80, 64), (10, 10, 30, 30))
    body = client.post("/inpaint", json={**FAST, "image": data_url(image),
                                         "mask": data_url(mask)}).json()
    record = client.get(f"/records/{body['record_id']}").json()
    sent = decode(client.get(f"/blobs/{record['input_image_sha256']}").content)
    assert sent.tobytes() == image.tobytes()
    assert decode(client.get(f"/blobs/{record['mask_sha256']}").content).tobytes() == \
        mask.tobytes()
    assert record["mask_applied_sha256"] == body["mask_applied"]["sha256"]


def test_a_model_that_fails_to_load_leaves_a_failed_record(client):
    r = client.post("/txt2img", json={**FAST, "model": "broken"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "model_load_failed"
    failed = client.get("/records", params={"status": "failed"}).json()
    assert failed["total"] == 1
    record = failed["items"][0]
    assert record["model"] == "broken" and record["error_code"] == "model_load_failed"
    assert "broken" in record["error_message"] and record["finished_at"]
    assert client.post("/txt2img", json=FAST).status_code == 200  # the worker lives on


def test_filter_by_endpoint_status_and_time_with_pagination(client):
    for seed in range(3):
        client.post("/txt2img", json={**FAST, "seed": seed})
    client.post("/inpaint", json={**FAST, "image": data_url(scene(64, 64)),
                                  "mask": data_url(box_mask((64, 64), (5, 5, 20, 20)))})
    client.post("/txt2img", json={**FAST, "model": "broken"})

    everything = client.get("/records").json()
    assert everything["total"] == 5
    created = [r["created_at"] for r in everything["items"]]
    assert created == sorted(created, reverse=True)

    txt = client.get("/records", params={"endpoint": "txt2img", "status": "succeeded"}).json()
    assert txt["total"] == 3
    assert {r["endpoint"] for r in txt["items"]} == {"txt2img"}

    page1 = client.get("/records", params={"limit": 2}).json()
    page2 = client.get("/records", params={"limit": 2, "offset": 2}).json()
    assert len(page1["items"]) == len(page2["items"]) == 2
    assert not {r["id"] for r in page1["items"]} & {r["id"] for r in page2["items"]}

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert client.get("/records", params={"since": future}).json()["total"] == 0
    assert client.get("/records", params={"since": past}).json()["total"] == 5
    assert client.get("/records", params={"until": past}).json()["total"] == 0


def test_unknown_record_and_blob_are_404_envelopes(client):
    assert client.get("/records/nope").json()["error"]["code"] == "not_found"
    for blob in ("0" * 64, "../../etc/passwd", "abc"):
        r = client.get(f"/blobs/{blob}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_bad_filters_are_422(client):
    assert client.get("/records", params={"status": "weird"}).status_code == 422
    assert client.get("/records", params={"limit": 0}).status_code == 422
    assert client.get("/records", params={"since": "yesterday"}).status_code == 422
