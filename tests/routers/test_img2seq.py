"""POST /img2seq through the HTTP API: frames, seeds, modes, schedules, cancel, packages."""

from __future__ import annotations

import io
import json
import zipfile

import av
import numpy as np
import pytest
from PIL import Image

from tests.conftest import wait_for_job
from tests.routers.test_jobs import read_events
from tests.utils.images import data_url, decode, pixels, png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

# Image handling, not storage: these run on SQLite alone (records, jobs and keys are
# checked on both databases by the other tests here and in tests/persistence).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

INIT = data_url(scene(64, 64, seed=5))
BASE = {"image": INIT, "prompt": "a harbour at dusk", "frames": 4, "steps": 4, "seed": 9,
        "strength": 0.6, "width": 64, "height": 64}
ASYNC = {"Prefer": "respond-async"}


def run(client, **changes) -> dict:
    r = client.post("/img2seq", json={**BASE, **changes})
    assert r.status_code == 200, r.text
    return r.json()


def frame_pixels(client, body: dict) -> list[np.ndarray]:
    return [pixels(decode(client.get(f["url"]).content)) for f in body["frames"]]


def test_frames_come_back_in_order_with_names_seeds_and_records(client):
    body = run(client, frames=5)
    assert body["status"] == "succeeded"
    frames = body["frames"]
    assert [f["index"] for f in frames] == [0, 1, 2, 3, 4]
    assert [f["name"] for f in frames] == [f"frame_{i:04d}.png" for i in range(1, 6)]
    assert [f["seed"] for f in frames] == [9, 10, 11, 12, 13]  # increment by default
    for f in frames:
        img = decode(client.get(f["url"]).content)
        assert img.size == (64, 64)
        assert json.loads(img.text["bildwerk"])["name"] == f["name"]
    record = client.get(f"/records/{body['record_id']}").json()
    assert record["endpoint"] == "img2seq" and record["status"] == "succeeded"
    assert record["seeds"] == [9, 10, 11, 12, 13]
    stored = [o for o in record["outputs"] if o["kind"] == "frame"]
    assert [(o["name"], o["seed"], o["strength"], o["prompt"]) for o in stored] == \
        [(f["name"], f["seed"], 0.6, "a harbour at dusk") for f in frames]
    assert record["input_image_sha256"]


@SQLITE_ONLY
def test_a_fixed_seed_reproduces_the_same_frames(client):
    a = run(client, seed_policy="fixed")
    b = run(client, seed_policy="fixed")
    assert [f["seed"] for f in a["frames"]] == [9, 9, 9, 9]
    assert [f["sha256"] for f in a["frames"]] == [f["sha256"] for f in b["frames"]]


def test_random_seed_policy_records_every_drawn_seed(client):
    body = run(client, seed_policy="random", seed=None)
    seeds = [f["seed"] for f in body["frames"]]
    assert len(set(seeds)) == 4
    assert client.get(f"/records/{body['record_id']}").json()["seeds"] == seeds


@SQLITE_ONLY
def test_loopback_and_independent_give_different_sequences(client):
    loop = frame_pixels(client, run(client, mode="loopback", seed_policy="fixed"))
    indep = frame_pixels(client, run(client, mode="independent", seed_policy="fixed"))
    # The first frame starts from the init image in both modes …
    assert np.array_equal(loop[0], indep[0])
    # … independent frames with a fixed seed all equal the first; loopback ones move on.
    assert all(np.array_equal(p, indep[0]) for p in indep)
    assert not any(np.array_equal(a, b) for a, b in zip(loop, loop[1:], strict=False))


@SQLITE_ONLY
def test_a_keyframed_schedule_blends_the_frames_between_keyframes(client):
    schedule = {"0": "a quiet harbour", "4": "a volcano erupting at night"}
    body = run(client, prompt=None, prompt_schedule=schedule, frames=5, mode="independent",
               seed_policy="fixed")
    frames = body["frames"]
    assert [(f["prompt"], f["prompt_to"], f["prompt_weight"]) for f in frames] == [
        ("a quiet harbour", None, 0.0),
        ("a quiet harbour", "a volcano erupting at night", 0.25),
        ("a quiet harbour", "a volcano erupting at night", 0.5),
        ("a quiet harbour", "a volcano erupting at night", 0.75),
        ("a volcano erupting at night", None, 0.0)]
    px = [p.astype(int) for p in frame_pixels(client, body)]
    # Same seed and source: only the prompt blend changes, so every frame differs …
    assert all(np.abs(a - b).max() > 0 for a, b in zip(px, px[1:], strict=False))
    # … and the blend moves from the first keyframe towards the second.
    dist = [np.abs(p - px[0]).mean() for p in px]
    assert dist[1] < dist[4]
    only_first = run(client, frames=1, prompt="a quiet harbour", seed_policy="fixed",
                     mode="independent")
    assert np.array_equal(frame_pixels(client, only_first)[0], px[0])


def test_strength_schedule_and_motion_are_applied_and_recorded(client):
    body = run(client, strength={"0": 0.3, "3": 0.9}, motion={"zoom": 1.1, "rotate": [0, 5,
                                                                                    5, 5]},
               color_coherence=True)
    assert [f["strength"] for f in body["frames"]] == pytest.approx([0.3, 0.5, 0.7, 0.9])
    params = client.get(f"/records/{body['record_id']}").json()["params"]
    assert params["motion"]["zoom"] == 1.1 and params["color_coherence"] is True
    still = run(client, strength={"0": 0.3, "3": 0.9})
    moved, kept = frame_pixels(client, body), frame_pixels(client, still)
    assert np.array_equal(moved[0], kept[0])  # motion starts with the second frame
    assert not np.array_equal(moved[1], kept[1])


def test_every_package_decodes_with_n_frames(client):
    body = run(client, frames=5, packages=["zip", "sheet", "strip", "gif", "webp", "mp4"])
    packages = {p["kind"]: p for p in body["packages"]}
    assert set(packages) == {"zip", "sheet", "strip", "gif", "webp", "mp4"}
    get = lambda kind: client.get(packages[kind]["url"])  # noqa: E731

    with zipfile.ZipFile(io.BytesIO(get("zip").content)) as zf:
        names = zf.namelist()
        assert names == [f"frame_{i:04d}.png" for i in range(1, 6)]
        assert zf.read(names[2]) == client.get(body["frames"][2]["url"]).content
    assert decode(get("sheet").content).size == (3 * 64, 2 * 64)
    assert decode(get("strip").content).size == (5 * 64, 64)
    for kind, content_type in (("gif", "image/gif"), ("webp", "image/webp")):
        r = get(kind)
        assert r.headers["content-type"] == content_type
        assert Image.open(io.BytesIO(r.content)).n_frames == 5
    mp4 = get("mp4")
    assert mp4.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(mp4.content)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 5 and (decoded[0].width, decoded[0].height) == (64, 64)
    record = client.get(f"/records/{body['record_id']}").json()
    assert sorted(o["name"] for o in record["outputs"] if o["kind"] == "package") == sorted(
        p["name"] for p in body["packages"])


def test_sse_sends_a_frame_event_with_its_url_for_every_frame(client):
    job_id = client.post("/img2seq", json=BASE, headers=ASYNC).json()["job_id"]
    events = read_events(client, job_id)
    frames = [data for name, data in events if name == "frame"]
    assert [f["name"] for f in frames] == [f"frame_{i:04d}.png" for i in range(1, 5)]
    assert all(client.get(f["url"]).status_code == 200 for f in frames)
    progress = [d["progress"] for n, d in events if n == "progress" and d["stage"] ==
                "denoising"]
    assert {p["frame"] for p in progress} == {0, 1, 2, 3}
    assert all(p["frames"] == 4 for p in progress)
    assert events[-1][0] == "succeeded"


def test_cancel_mid_sequence_keeps_the_finished_frames(client):
    slow = {**BASE, "frames": 40, "steps": 30, "strength": 1.0, "width": 256, "height": 256}
    job_id = client.post("/img2seq", json=slow, headers=ASYNC).json()["job_id"]
    wait_for_job(client, job_id, until=lambda s: (s["progress"].get("frame") or 0) >= 2)
    client.delete(f"/jobs/{job_id}")
    status = wait_for_job(client, job_id)
    assert status["status"] == "cancelled"
    frames = status["result"]["frames"]
    assert 2 <= len(frames) < 40
    assert [f["name"] for f in frames] == [f"frame_{i:04d}.png" for i in
                                           range(1, len(frames) + 1)]
    record = client.get(f"/records/{status['record_id']}").json()
    assert record["status"] == "cancelled"
    assert [o["name"] for o in record["outputs"]] == [f["name"] for f in frames]
    assert record["seeds"] == [f["seed"] for f in frames]
    assert all(client.get(f"/blobs/{o['sha256']}").status_code == 200
               for o in record["outputs"])
    # After the job is gone from memory, its record still answers with the partial frames.
    from_record = client.get(f"/jobs/{job_id}").json()
    assert len(from_record["result"]["frames"]) == len(frames)


def test_multipart_with_a_file_and_json_fields(client):
    r = client.post("/img2seq", data={
        "prompt": "a harbour", "frames": "3", "steps": "3", "seed": "1", "width": "64",
        "height": "64", "packages": ["gif", "zip"], "motion": '{"zoom": 1.05}'},
        files={"image": ("init.png", png_bytes(scene(64, 64)), "image/png")})
    assert r.status_code == 200, r.text
    assert len(r.json()["frames"]) == 3
    assert {p["kind"] for p in r.json()["packages"]} == {"gif", "zip"}


@SQLITE_ONLY
@pytest.mark.parametrize("change, param", [
    ({"frames": 0}, "frames"),
    ({"frames": 121}, "frames"),
    ({"prompt": None}, None),  # neither prompt nor schedule
    ({"prompt_schedule": {"0": "x"}}, None),  # both
    ({"prompt": None, "prompt_schedule": {"9": "x"}}, "prompt_schedule"),
    ({"strength": [0.5, 0.5]}, "strength"),
    ({"strength": 0}, "strength"),
    ({"strength": {"0": 1.5}}, "strength"),
    ({"seed_policy": "chaos"}, "seed_policy"),
    ({"mode": "sideways"}, "mode"),
    ({"packages": ["avi"]}, "packages.0"),
    ({"motion": {"zoom": 0}}, "motion.zoom"),
    ({"image": "not an image"}, "image"),
])
def test_bad_input_gets_a_4xx_envelope(client, change, param):
    r = client.post("/img2seq", json={**BASE, **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param
