"""Fixtures for the kiosk page tests: a real server with BILDWERK_KIOSK_PAGE on (one per
module), the system Chromium driven by Playwright, and helpers that paint like a visitor.

Chromium comes from the system (Debian's ``chromium`` package; scripts/test installs it
when it is missing and it can), never from ``playwright install``. Set
BILDWERK_TEST_CHROMIUM to use another binary. Without any, the tests skip and say why.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils.server import ROOT, Server

MAP_SIZE = 256
# The server's BILDWERK_KIOSK_IDLE_S (tests other than the idle one raise it through
# config.json). Not the minimum of 5: on a loaded CI machine a few seconds can pass
# between two inputs of the test, and the page must not reset before it has painted.
IDLE_S = 8
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    explicit = os.environ.get("BILDWERK_TEST_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(path).is_file():
            return path
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def load_map_maker():
    """clients/kiosk/make_sample_map.py (not a package: loaded from its path)."""
    path = ROOT / "clients" / "kiosk" / "make_sample_map.py"
    spec = importlib.util.spec_from_file_location("kiosk_make_sample_map", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kiosk_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kiosk-map") / "map.png"
    load_map_maker().draw_map(MAP_SIZE).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedded_template: Path,
           kiosk_map: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("kiosk-server")
    data = root / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    (root / "models").mkdir()
    server = Server(data, root / "models", BILDWERK_EMBEDDED_MODEL_ID="bildwerk-tiny",
                    BILDWERK_KIOSK_PAGE="true", BILDWERK_KIOSK_MAP=str(kiosk_map),
                    BILDWERK_KIOSK_IDLE_S=str(IDLE_S)).start()
    # Every request is an access-log line: read them as they come, or the pipe fills up
    # and the server blocks on its next log write.
    drain = threading.Thread(target=server.proc.stdout.read, daemon=True)
    drain.start()
    try:
        yield server
    finally:
        server.proc.kill()
        server.proc.wait(timeout=30)
        drain.join(10)


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        why = ("no Chromium found (apt-get install chromium, or set BILDWERK_TEST_CHROMIUM); "
               "the kiosk page tests need a real browser")
        if os.environ.get("CI"):  # CI must run them: scripts/test installs Chromium there
            pytest.fail(why)
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (scripts/bootstrap test)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable,
                                    args=["--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


# What the page did, seen from inside: the screens it showed, the progress values it set
# and the kinds of pointers that drew on it.
RECORDER = """
window.__kiosk = { screens: [], progress: [], pointerTypes: [] };
document.addEventListener("pointerdown", (e) => window.__kiosk.pointerTypes.push(e.pointerType),
                          true);
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.attributeName === "data-screen") window.__kiosk.screens.push(c.target.dataset.screen);
      if (c.attributeName === "value" && c.target.id === "progress") {
        window.__kiosk.progress.push(Number(c.target.getAttribute("value")));
      }
    }
  }).observe(document.body, { attributes: true, subtree: true,
                              attributeFilter: ["data-screen", "value"] });
});
"""


@pytest.fixture
def open_page(browser, server: Server):
    """open_page(idle_s=600, portrait=False) -> a Page on /kiosk/, past the attract screen.

    ``idle_s`` replaces the server's idle time in config.json (the server runs with
    ``IDLE_S`` for the idle test; the others must not be reset while they wait for a job).
    ``None`` keeps the server's."""
    contexts = []

    def open_(idle_s: float | None = 600, portrait: bool = False, start: bool = True):
        size = {"width": 1080, "height": 1920} if portrait else {"width": 1920, "height": 1080}
        context = browser.new_context(viewport=size, has_touch=True, locale="de-DE")
        contexts.append(context)
        context.add_init_script(RECORDER)
        page = context.new_page()
        page.set_default_timeout(30000)
        if idle_s is not None:
            def config(route):
                response = route.fetch()
                body = response.json()
                body["idle_s"] = idle_s
                route.fulfill(response=response, body=json.dumps(body))
            page.route("**/kiosk/config.json", config)
        page.goto(f"{server.base}/kiosk/")
        # the attract screen shows while the page still loads its config and map: wait
        # until it is ready (a tap while loading is ignored)
        page.wait_for_function("() => document.body.dataset.screen === 'attract'")
        page.get_by_test_id("attract").wait_for(state="visible")
        if start:
            page.get_by_test_id("attract").click()
            page.wait_for_function("() => document.body.dataset.screen === 'edit'")
        return page

    yield open_
    for context in contexts:
        context.close()


def canvas_box(page) -> dict:
    box = page.get_by_test_id("canvas").bounding_box()
    assert box and box["width"] > 100, box
    return box


def mouse_stroke(page, points: list[tuple[float, float]]) -> None:
    """Draw with the mouse through ``points`` (fractions of the canvas)."""
    box = canvas_box(page)
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def touch_stroke(page, points: list[tuple[float, float]]) -> None:
    """Draw with a finger: real touch input through the DevTools protocol, which Chromium
    turns into pointer events with pointerType "touch"."""
    box = canvas_box(page)
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    cdp = page.context.new_cdp_session(page)
    try:
        def send(kind: str, x: float | None = None, y: float | None = None) -> None:
            touches = [] if x is None else [{"x": x, "y": y, "id": 1}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touches})

        send("touchStart", *xy[0])
        for (x0, y0), (x1, y1) in zip(xy, xy[1:], strict=False):
            for i in range(1, 7):
                send("touchMove", x0 + (x1 - x0) * i / 6, y0 + (y1 - y0) * i / 6)
        send("touchEnd")
    finally:
        cdp.detach()


def recorded(page) -> dict:
    return page.evaluate("window.__kiosk")


def painted_alpha(page) -> np.ndarray:
    """The page's paint canvas, alpha channel, at the map's resolution."""
    data = page.evaluate("""() => {
        const c = document.querySelector('[data-testid=canvas]');
        return c.toDataURL('image/png');
    }""")
    return np.asarray(decode_data_url(data).convert("RGBA"))[..., 3]


def decode_data_url(value: str) -> Image.Image:
    assert value.startswith("data:image/"), value[:40]
    img = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
    img.load()
    return img


def shots_dir() -> Path | None:
    """KIOSK_SCREENSHOTS=dir: the tests also save screenshots there."""
    value = os.environ.get("KIOSK_SCREENSHOTS")
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path
