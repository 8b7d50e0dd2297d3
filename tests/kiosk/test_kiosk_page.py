"""The museum kiosk's visitor page (clients/kiosk/) in a real headless Chromium against a
real server: paint with mouse and finger, send a German wish, follow the job, get a result
in which only the painted area changed; a full queue that recovers; cancel; the idle reset;
errors in plain words. The page is off (404) unless BILDWERK_KIOSK_PAGE is set.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_edt

from tests.kiosk.conftest import (
    IDLE_S,
    MAP_SIZE,
    decode_data_url,
    mouse_stroke,
    painted_alpha,
    recorded,
    shots_dir,
    touch_stroke,
)
from tests.utils.images import decode, pixels

WISH = "Hier soll ein Windpark entstehen"
MASK_BLUR = 4  # the server's default mask_blur (the page does not send one)
QUICK_STEPS, QUICK_SIZE = 12, 128


def paint_both_ways(page) -> None:
    mouse_stroke(page, [(0.15, 0.2), (0.35, 0.25), (0.4, 0.4)])
    touch_stroke(page, [(0.6, 0.65), (0.75, 0.7), (0.8, 0.85)])


def quick(page, steps: int = QUICK_STEPS) -> None:
    """Let the page's POST /inpaint through with fewer steps at a smaller processing size,
    so that the tiny model answers in about a second on two cores. The page's own body
    (wish, map, mask, seed) goes as it is; request.post_data still shows it."""
    def handler(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "steps": steps, "width": QUICK_SIZE,
                                              "height": QUICK_SIZE}))

    page.route("**/inpaint", handler)


def job_status(server, job_id: str) -> dict:
    r = server.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(server, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job_status(server, job_id)
        if status["status"] in statuses:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {statuses}: {status}")


def test_paint_wish_progress_and_only_the_painted_area_changes(open_page, server, kiosk_map):
    page = open_page()
    paint_both_ways(page)
    alpha = painted_alpha(page)
    assert alpha.shape == (MAP_SIZE, MAP_SIZE)
    # both strokes landed where they were drawn: the mouse's up left, the finger's down right
    assert alpha[40:110, 30:110].max() > 0 and alpha[160:220, 150:210].max() > 0
    assert {"mouse", "touch"} <= set(recorded(page)["pointerTypes"])
    page.get_by_test_id("undo").click()  # takes back the finger's stroke ...
    assert painted_alpha(page)[160:220, 150:210].max() == 0
    touch_stroke(page, [(0.6, 0.65), (0.75, 0.7), (0.8, 0.85)])  # ... which comes back
    page.get_by_test_id("wish").fill(WISH)

    quick(page)
    with page.expect_request("**/inpaint") as sent, \
            page.expect_response("**/inpaint") as answered:
        page.get_by_test_id("submit").click()
    request = sent.value
    assert request.headers.get("prefer") == "respond-async"
    assert answered.value.status == 202
    job_id = answered.value.json()["job_id"]
    body = json.loads(request.post_data)
    assert body["prompt"] == WISH and body["translate"] is True
    assert body["inpaint_area"] == "masked" and isinstance(body["seed"], int)
    mask = decode_data_url(body["mask"])
    assert mask.mode == "RGBA" and mask.size == (MAP_SIZE, MAP_SIZE)
    mask_alpha = np.asarray(mask)[..., 3]
    assert set(np.unique(mask_alpha)) == {0, 255}  # painted opaque, the rest transparent
    painted = mask_alpha > 0
    assert painted[40:110, 30:110].any() and painted[160:220, 150:210].any()
    sent_map = decode_data_url(body["image"])
    assert np.array_equal(pixels(sent_map), pixels(Image.open(kiosk_map)))  # the map, as is

    result = page.get_by_test_id("result")
    result.wait_for(state="visible", timeout=60000)
    seen = recorded(page)
    assert "working" in seen["screens"] and seen["screens"][-1] == "result"
    assert any(0 < v <= 100 for v in seen["progress"]), seen["progress"]  # from the SSE
    assert not page.get_by_test_id("progress").is_visible()

    status = job_status(server, job_id)
    assert status["status"] == "succeeded"
    image = status["result"]["images"][0]
    assert result.get_attribute("data-src") == image["url"]
    out = decode(httpx.get(server.base + image["url"], timeout=10).content)
    assert out.size == (MAP_SIZE, MAP_SIZE)
    before, after = pixels(Image.open(kiosk_map)).astype(int), pixels(out).astype(int)
    changed = np.abs(after - before).sum(axis=-1) > 0
    # Far from any painted pixel (beyond the blur's reach), not one pixel changed ...
    distance = distance_transform_edt(~painted)
    far = distance > MASK_BLUR * 3 + 4
    assert far.sum() > MAP_SIZE * MAP_SIZE // 2
    assert not changed[far].any(), f"{changed[far].sum()} pixels changed outside the mask"
    # ... nor anywhere the server's applied (blurred) mask is 0; the painted area did change.
    applied = np.asarray(decode(httpx.get(server.base + status["result"]["mask_applied"]["url"],
                                          timeout=10).content).convert("L"))
    assert not changed[applied == 0].any()
    assert changed[painted].mean() > 0.5, changed[painted].mean()

    # before/after: the slider moves the split
    page.get_by_test_id("slider").fill("20")
    clip = page.evaluate("document.getElementById('before').style.clipPath")
    assert "80%" in clip, clip
    if (shots := shots_dir()) is not None:
        page.get_by_test_id("slider").fill("50")
        page.screenshot(path=str(shots / "result.png"))
        page.set_viewport_size({"width": 1080, "height": 1920})
        page.screenshot(path=str(shots / "result-portrait.png"))
        page.set_viewport_size({"width": 1920, "height": 1080})

    # another version: the same wish and mask, a new seed
    with page.expect_request("**/inpaint") as again:
        page.get_by_test_id("again").click()
    body2 = json.loads(again.value.post_data)
    assert body2["prompt"] == WISH and body2["mask"] == body["mask"]
    assert body2["seed"] != body["seed"]
    page.wait_for_function(
        "(seed) => document.body.dataset.screen === 'result'"
        " && document.querySelector('[data-testid=result]').dataset.seed === String(seed)",
        arg=body2["seed"], timeout=60000)

    # start over: an empty map and wish
    page.get_by_test_id("reset").click()
    page.wait_for_function("() => document.body.dataset.screen === 'edit'")
    assert painted_alpha(page).max() == 0
    assert page.get_by_test_id("wish").input_value() == ""


def test_a_full_queue_waits_and_retries_by_itself_and_polling_replaces_sse(open_page, server):
    page = open_page()
    posts: list[str] = []

    def queue_full_once(route):
        posts.append(route.request.method)
        if len(posts) == 1:
            route.fulfill(status=429, headers={"Retry-After": "1"}, json={"error": {
                "code": "queue_full", "message": "queue is full (16 jobs)", "param": None}})
        else:
            body = json.loads(route.request.post_data)
            route.continue_(post_data=json.dumps({**body, "steps": QUICK_STEPS,
                                                  "width": QUICK_SIZE, "height": QUICK_SIZE}))

    page.route("**/inpaint", queue_full_once)
    # and no event stream either: the page follows the job by polling GET /jobs/{id}
    page.route("**/jobs/*/events", lambda route: route.abort("connectionreset"))
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url) if r.method == "GET"
            and "/jobs/" in r.url and not r.url.endswith("/events") else None)
    mouse_stroke(page, [(0.3, 0.3), (0.6, 0.5)])
    page.get_by_test_id("example").first.click()  # a tapped example is the wish
    assert page.get_by_test_id("wish").input_value() == WISH
    page.get_by_test_id("submit").click()
    status = page.get_by_test_id("status")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=status]').textContent"
        ".includes('viel los')")
    assert "1 Sekunden" in status.text_content()
    page.get_by_test_id("result").wait_for(state="visible", timeout=60000)
    assert len(posts) == 2
    assert polled, "the page did not fall back to polling"
    assert page.get_by_test_id("error").is_hidden()


def test_cancel_leaves_the_progress_state_and_cancels_the_job(open_page, server):
    page = open_page()

    quick(page, steps=1000)  # a job that would take a minute or more
    mouse_stroke(page, [(0.2, 0.7), (0.5, 0.8)])
    page.get_by_test_id("wish").fill("Mehr Grünflächen statt Beton")
    with page.expect_response("**/inpaint") as answered:
        page.get_by_test_id("submit").click()
    job_id = answered.value.json()["job_id"]
    server.wait_running(job_id)
    page.wait_for_function("() => window.__kiosk.progress.some((v) => v > 0)")  # live progress
    assert page.get_by_test_id("progress").is_visible()
    if (shots := shots_dir()) is not None:
        page.screenshot(path=str(shots / "mid-job.png"))
        page.set_viewport_size({"width": 1080, "height": 1920})
        page.screenshot(path=str(shots / "mid-job-portrait.png"))
        page.set_viewport_size({"width": 1920, "height": 1080})

    page.get_by_test_id("cancel").click()
    page.get_by_test_id("progress").wait_for(state="hidden", timeout=5000)
    assert page.evaluate("document.body.dataset.screen") == "edit"
    assert "Abgebrochen" in page.locator("#hint").text_content()
    assert wait_job(server, job_id, ("cancelled", "succeeded", "failed"))["status"] == "cancelled"
    assert painted_alpha(page).max() > 0  # the drawing stays for another try
    assert page.get_by_test_id("submit").is_enabled()


def test_idle_goes_back_to_the_attract_screen_and_clears(open_page, server):
    page = open_page(idle_s=None)  # the server's BILDWERK_KIOSK_IDLE_S
    assert float(page.evaluate("document.body.dataset.idleS")) == IDLE_S
    page.get_by_test_id("language").click()  # English ...
    assert page.get_by_test_id("submit").text_content() == "Paint the future"
    mouse_stroke(page, [(0.4, 0.4), (0.6, 0.6)])
    page.get_by_test_id("wish").fill("Ein See zum Baden")
    touched = time.monotonic()
    assert painted_alpha(page).max() > 0
    page.get_by_test_id("attract").wait_for(state="visible", timeout=(IDLE_S + 10) * 1000)
    assert time.monotonic() - touched >= IDLE_S - 1  # not before the idle time
    assert page.get_by_test_id("attract").text_content().count("Tippe, um zu beginnen") == 1
    assert painted_alpha(page).max() == 0
    assert page.get_by_test_id("wish").input_value() == ""
    page.get_by_test_id("attract").click()  # ... back in German for the next visitor
    assert page.get_by_test_id("submit").text_content() == "Zukunft malen"


def test_errors_are_plain_words_and_a_network_failure_offers_a_retry(open_page, server):
    page = open_page()
    mouse_stroke(page, [(0.5, 0.2), (0.5, 0.5)])
    page.get_by_test_id("submit").click()  # no wish yet: said so, nothing sent
    assert "Wunsch" in page.get_by_test_id("error").text_content()
    page.get_by_test_id("wish").fill("Ein Wald statt Häuser")

    page.route("**/inpaint", lambda route: route.fulfill(status=422, json={"error": {
        "code": "invalid_input", "message": "mask marks no pixel to change", "param": "mask"}}))
    page.get_by_test_id("submit").click()
    error = page.get_by_test_id("error")
    error.wait_for(state="visible")
    assert "nicht geklappt" in error.text_content()
    assert "Mask marks no pixel to change" in error.text_content()
    assert page.get_by_test_id("progress").is_hidden()  # no spinner left behind
    assert page.get_by_test_id("retry").is_hidden()

    page.unroute("**/inpaint")
    page.route("**/inpaint", lambda route: route.abort("connectionrefused"))
    page.get_by_test_id("submit").click()
    page.get_by_test_id("retry").wait_for(state="visible")
    assert "Keine Verbindung" in error.text_content()
    assert page.get_by_test_id("progress").is_hidden()
    page.unroute("**/inpaint")
    quick(page)
    page.get_by_test_id("retry").click()
    page.get_by_test_id("result").wait_for(state="visible", timeout=60000)
    assert error.is_hidden()


@pytest.mark.parametrize("path", ["/kiosk/", "/kiosk", "/kiosk/config.json", "/kiosk/map",
                                  "/kiosk/kiosk.js"])
def test_the_page_is_a_404_while_the_setting_is_off(path, tmp_path):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(_env_file=None, data_dir=tmp_path / "data", kiosk_page=False))
    r = TestClient(app).get(path, follow_redirects=False)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_the_page_its_config_map_and_assets_when_on(tmp_path, kiosk_map):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", kiosk_page=True,
                        kiosk_map=kiosk_map, kiosk_idle_s=42, kiosk_style="satellite-map")
    client = TestClient(create_app(settings))
    index = client.get("/kiosk/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert 'data-testid="map"' in index.text
    assert client.get("/kiosk", follow_redirects=False).headers["location"] == "/kiosk/"
    config = client.get("/kiosk/config.json").json()
    assert config["idle_s"] == 42 and config["map_url"] == "map" and config["language"] == "de"
    assert config["style"] == "satellite-map"
    map_ = client.get("/kiosk/map")
    assert map_.status_code == 200 and map_.headers["content-type"] == "image/png"
    assert map_.content == kiosk_map.read_bytes()
    js = client.get("/kiosk/kiosk.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for name in ("make_sample_map.py", "README.md", "..%2Fapp%2Fconfig.py", "nope.js"):
        r = client.get(f"/kiosk/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", name
    # the default map is the shipped sample
    default = TestClient(create_app(Settings(_env_file=None, data_dir=tmp_path / "d2",
                                             kiosk_page=True)))
    sample = default.get("/kiosk/map")
    assert sample.status_code == 200
    assert Image.open(io.BytesIO(sample.content)).size == (768, 768)
