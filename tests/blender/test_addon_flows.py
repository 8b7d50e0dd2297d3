"""The Blender add-on (clients/blender) inside real Blender, against a live Bildwerk.

Each test runs one Blender process (``blender -b``, or a Python with the ``bpy`` wheel)
with a script from tests/blender/scripts/: it installs the zip that
clients/blender/build.py builds, the way a user does, sets the preferences, runs the
operators with ``wait=True`` and checks the results inside Blender, writing a JSON report.
Here the report is asserted on, and what the server recorded is read back over HTTP.

Generation stays tiny (64x64, 2 steps on the embedded random model). One Blender process
per test keeps the module to a few minutes on two cores.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.blender.conftest import BlenderRun, BlenderRuntime, Live, run_blender


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


def _assert_clean(run: BlenderRun) -> None:
    failed = run.failed_checks()
    traces = "\n".join(c.get("trace", "") for c in run.report["checks"] if not c["ok"])
    assert not failed, ("checks failed in Blender " + run.report.get("blender", "?") + ":\n"
                        + "\n".join(failed) + "\n" + traces + "\nlog tail:\n" + run.log[-4000:])
    assert run.report["values"].get("done"), f"the script stopped early:\n{run.log[-4000:]}"
    assert run.returncode == 0, run.log[-4000:]
    assert "Traceback" not in run.log, f"a traceback in Blender's log:\n{run.log[-6000:]}"


def test_flows_in_blender(blender: BlenderRuntime, addon_zip: Path, live: Live,
                          tmp_path: Path) -> None:
    out = tmp_path / "output"
    run = run_blender(blender, "flows.py", [
        "--zip", str(addon_zip), "--url", live.url, "--key", live.admin, "--out", str(out),
        "--loras", ",".join(live.loras)], tmp_path)
    _assert_clean(run)
    values = run.report["values"]

    # txt2img: the record on the server is the one the image names.
    image = values["txt2img"]
    record = live.get(f"/records/{image['record_id']}")
    assert record["endpoint"] == "txt2img"
    assert record["prompt"] == "a lighthouse at dusk"
    assert record["seeds"] == [42]
    assert record["params"]["width"] == 64 and record["params"]["steps"] == 2
    # The rating from bildwerk.rate is the record's feedback.
    assert record["feedback"]["rating"] == 4
    assert record["feedback"]["flags"] == ["good"]
    assert record["feedback"]["comment"] == "from Blender"

    # img2img from a render: the input image on the record is the render.
    img2img = live.get(f"/records/{values['img2img']['record_id']}")
    assert img2img["endpoint"] == "img2img" and img2img["input_image_sha256"]
    assert img2img["params"]["strength"] == 0.7

    # img2seq: frames in order, seeds incrementing.
    seq = live.get(f"/records/{values['img2seq']['record_id']}")
    assert seq["endpoint"] == "img2seq" and seq["status"] == "succeeded"
    frames = [o for o in seq["outputs"] if o["kind"] == "frame"]
    assert [o["name"] for o in frames] == values["img2seq"]["frames"]
    assert [o["seed"] for o in frames] == [100, 101, 102, 103]

    # The node tree: LoRAs chained, the scheduler picked, txt2img -> img2img -> upscale.
    tree = values["tree"]
    t2i = live.get(f"/records/{tree['t2i'][0]['record_id']}")
    assert t2i["scheduler"] == "ddim"
    assert t2i["negative_prompt"] == "fog"
    expected_loras = values["tree_loras"]
    assert [lo["name"] for lo in t2i["loras"] or []] == expected_loras
    up = live.get(f"/records/{tree['up'][0]['record_id']}")
    assert up["endpoint"] == "upscale"
    inp = live.get(f"/records/{tree['inp'][0]['record_id']}")
    assert inp["endpoint"] == "inpaint" and inp["mask_sha256"]

    # Merge: the image was made with the merged model.
    merged = live.get(f"/records/{values['merge']['record_id']}")
    assert merged["model"] == "blender-merge"

    # Keyframed strength and timeline-marker prompts reached the server as schedules.
    keyed = live.get(f"/records/{values['keyed']['record_id']}")
    strength = keyed["params"]["strengths"]
    assert isinstance(strength, list) and len(strength) == 3, strength
    assert abs(strength[0] - 0.3) < 1e-3 and abs(strength[2] - 0.7) < 1e-3, strength
    assert strength[0] < strength[1] < strength[2]
    schedule = keyed["params"]["prompt_schedule"]
    assert {int(k): v for k, v in schedule.items()} == {0: "a forest in spring",
                                                        2: "a forest in winter"}

    # Cancel: the record ends cancelled, with the frames the strip holds.
    cancel = values["cancel"]
    cancelled = live.get(f"/records/{cancel['record_id']}")
    assert cancelled["status"] == "cancelled"
    kept = [o["name"] for o in cancelled["outputs"] if o["kind"] == "frame"]
    assert kept[:len(cancel["frames"])] == cancel["frames"]

    # Script -> Prompts and the storyboard preset were recorded as prompt expansions.
    expansions = live.get("/records", endpoint="prompt-expand")["items"]
    assert len(expansions) >= 2


def test_errors_in_blender(blender: BlenderRuntime, addon_zip: Path, live: Live,
                           tmp_path: Path) -> None:
    run = run_blender(blender, "errors.py", [
        "--zip", str(addon_zip), "--url", live.url, "--key", live.admin,
        "--out", str(tmp_path / "output"), "--down-url", f"http://127.0.0.1:{_closed_port()}"],
        tmp_path)
    _assert_clean(run)
    values = run.report["values"]
    assert values["wrong_api_key"]["txt2img"].startswith("Bildwerk refused the API key (401")
    assert values["busy"].startswith("Bildwerk is busy (429 queue_full) after 1 retries")
