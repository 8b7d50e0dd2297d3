"""POST /img2seq work limits: the sequence budget and the strip/sheet canvas, refused with
413 before anything is stored, recorded or queued."""

from __future__ import annotations

import pytest

from tests.utils.images import data_url, decode, scene

BASE = {"image": data_url(scene(64, 64, seed=5)), "prompt": "a harbour at dusk", "frames": 4,
        "steps": 4, "seed": 9, "strength": 0.6, "width": 64, "height": 64}
ALL_PACKAGES = ["zip", "sheet", "strip", "gif", "webp", "mp4"]
ASYNC = {"Prefer": "respond-async"}  # were a limit missed, the test fails at once with a 202


def assert_nothing_taken(client) -> None:
    """Only the refusal's record (status rejected, its input image kept), no other stored
    file, no job waiting or running."""
    records = client.get("/records", params={"endpoint": "img2seq"}).json()["items"]
    assert [r["status"] for r in records] == ["rejected"]
    assert records[0]["error_code"] and records[0]["outputs"] == []
    blobs = client.app.state.settings.blobs_dir
    stored = {p.name for p in blobs.rglob("*") if p.is_file()} if blobs.exists() else set()
    assert stored <= {records[0]["input_image_sha256"]}
    queue = client.app.state.queue
    assert queue.waiting == 0 and queue.running is None and queue.unfinished() == []


def test_a_sequence_over_the_work_budget_is_413_and_nothing_is_queued(client):
    # The case: 120 frames of 2048x2048 at 150 steps with every package.
    r = client.post("/img2seq", json={**BASE, "frames": 120, "width": 2048, "height": 2048,
                                      "steps": 150, "packages": ALL_PACKAGES},
                    headers=ASYNC)
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "payload_too_large" and error["param"] == "frames"
    assert "120 frames of 2048x2048 at 150 steps" in error["message"]
    assert "BILDWERK_MAX_SEQUENCE_WORK" in error["message"]
    assert_nothing_taken(client)


def test_the_work_budget_is_frames_times_pixels_times_steps(make_client):
    client = make_client(max_sequence_work=4 * 64 * 64 * 4)
    assert client.post("/img2seq", json=BASE).status_code == 200  # exactly the budget
    r = client.post("/img2seq", json={**BASE, "steps": 5}, headers=ASYNC)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert f"{4 * 64 * 64 * 5:,} pixel-steps" in r.json()["error"]["message"]


@pytest.mark.parametrize("kind, size", [("strip", "122880x1024"), ("sheet", "11264x11264")])
def test_a_strip_or_sheet_canvas_over_the_limit_is_413_before_queueing(client, kind, size):
    # 120 frames of 1024x1024 at 4 steps are within the work budget; their one-image
    # package is not (8192x8192 by default).
    r = client.post("/img2seq", json={**BASE, "frames": 120, "width": 1024, "height": 1024,
                                      "packages": ["zip", kind]}, headers=ASYNC)
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "payload_too_large" and error["param"] == "packages"
    assert f"a {kind} of 120 frames of 1024x1024 would be a {size} image" in error["message"]
    assert "BILDWERK_MAX_CANVAS_PIXELS" in error["message"]
    assert_nothing_taken(client)


def test_the_canvas_limit_measures_the_grid_the_package_is_drawn_on(make_client):
    # 5 frames of 64x64: a strip is 320x64 (20480 px), a sheet 3x2 frames, 192x128 (24576).
    client = make_client(max_canvas_pixels=320 * 64)
    r = client.post("/img2seq", json={**BASE, "frames": 5, "packages": ["strip"]})
    assert r.status_code == 200, r.text
    strip = client.get(r.json()["packages"][0]["url"]).content
    assert decode(strip).size == (320, 64)
    r = client.post("/img2seq", json={**BASE, "frames": 5, "packages": ["sheet"]},
                    headers=ASYNC)
    assert r.status_code == 413 and r.json()["error"]["param"] == "packages"
    assert "192x128" in r.json()["error"]["message"]
