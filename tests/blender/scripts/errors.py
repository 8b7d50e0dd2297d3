"""Inside Blender: what a user sees when things go wrong. Server down, a wrong API key and
a rejected request each give one clear line (never a traceback); a 429 with Retry-After
is waited out and retried (against a tiny stub server in this process, the only check not
made against the real server).

Run by tests/blender/test_addon_flows.py; writes a JSON report of named checks."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Report, call, install_addon, parse_args, prefs, require, set_prefs  # noqa: E402

args = parse_args([(("--down-url",), {"required": True})])
report = Report(args.report)
ops = bpy.ops.bildwerk
wm = bpy.context.window_manager
module = ""


def one_line_error(ok: bool, error: str) -> str:
    """The operator's error as the user sees it (bpy.ops prefixes "Error: ")."""
    require(not ok, "the operator succeeded")
    text = error.strip()
    text = text[len("Error: "):] if text.startswith("Error: ") else text
    require("\n" not in text, f"more than one line: {text!r}")
    require("Traceback" not in text and "File \"" not in text, f"a traceback: {text!r}")
    require(len(text) <= 300, f"too long: {text!r}")
    return text


class Stub(BaseHTTPRequestHandler):
    """GET /openapi.json and /models answer 429 (Retry-After: 1) ``busy_first`` times,
    then normally; POST /txt2img always answers 429; /html answers a web page."""

    busy_first = 1
    seen: list = []

    def log_message(self, *a):  # keep Blender's log clean
        pass

    def _send(self, status: int, body: bytes, ctype="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _busy(self):
        body = json.dumps({"error": {"code": "queue_full", "message": "the queue is full",
                                     "param": None}}).encode()
        self._send(429, body, headers={"Retry-After": "1"})

    def do_GET(self):
        Stub.seen.append((time.monotonic(), "GET", self.path))
        gets = [s for s in Stub.seen if s[1] == "GET"]
        if self.path.startswith("/html"):
            return self._send(200, b"<html>hello</html>", "text/html")
        if len(gets) <= Stub.busy_first:
            return self._busy()
        if self.path == "/openapi.json":
            return self._send(200, json.dumps({"info": {"title": "Stub", "version": "9.9"},
                                               "paths": {"/txt2img": {}}}).encode())
        if self.path == "/models":
            return self._send(200, json.dumps([{"id": "stub-model", "family": "sd15",
                                                "variant": "base", "default": True}]).encode())
        return self._send(404, json.dumps({"error": {"code": "not_found", "message":
                                                     "route not found", "param": None}}).encode())

    def do_POST(self):
        Stub.seen.append((time.monotonic(), "POST", self.path))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._busy()


with report.check("install"):
    module = install_addon(args.zip, "legacy")
    set_prefs(module, server_url=args.url, api_key=args.key, width=64, height=64, steps=2,
              output_dir=args.out, timeout=20.0)

with report.check("server_down"):
    set_prefs(module, server_url=args.down_url)
    text = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
    require("Cannot reach Bildwerk" in text and "refused" in text, text)
    require(wm.bildwerk_status.message == text, f"panel shows {wm.bildwerk_status.message!r}")
    require(wm.bildwerk_status.failed, "the panel does not show a failure")
    messages = {"txt2img": text}
    tree = bpy.data.node_groups.new("T", "BildwerkNodeTree")
    prompt = tree.nodes.new("BildwerkPromptNode")
    t2i = tree.nodes.new("BildwerkTxt2ImgNode")
    tree.links.new(prompt.outputs["Prompt"], t2i.inputs["Prompt"])
    messages["run_tree"] = one_line_error(*call(ops.run_tree, tree="T", wait=True))
    messages["refresh_models"] = one_line_error(*call(ops.refresh_models, wait=True))
    messages["test_connection"] = one_line_error(*call(ops.test_connection, wait=True))
    require(prefs(module).connection_status == messages["test_connection"],
            prefs(module).connection_status)
    for name, message in messages.items():
        require("Cannot reach Bildwerk" in message, f"{name}: {message}")
    report.value("server_down", messages)

with report.check("wrong_api_key"):
    set_prefs(module, server_url=args.url, api_key="bw_this_is_not_a_key")
    text = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
    require("401" in text and "API key" in text, text)
    conn = one_line_error(*call(ops.test_connection, wait=True))
    require("401" in conn, conn)
    report.value("wrong_api_key", {"txt2img": text, "test_connection": conn})

with report.check("rejected_422"):
    set_prefs(module, api_key=args.key, default_model="no-such-model")
    text = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
    require("no-such-model" in text or "model" in text, text)
    set_prefs(module, default_model="", style="no-such-style")
    style = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
    require("422" in style, style)
    set_prefs(module, style="")
    report.value("rejected", {"model": text, "style": style})

with report.check("nothing_to_run"):
    tree = bpy.data.node_groups.new("Empty", "BildwerkNodeTree")
    text = one_line_error(*call(ops.run_tree, tree="Empty", wait=True))
    require("Nothing to run" in text, text)
    tree = bpy.data.node_groups.new("Unlinked", "BildwerkNodeTree")
    tree.nodes.new("BildwerkImg2ImgNode")
    text2 = one_line_error(*call(ops.run_tree, tree="Unlinked", wait=True))
    require("connect" in text2, text2)
    report.value("tree_errors", [text, text2])

with report.check("img2img_without_render"):
    text = one_line_error(*call(ops.img2img_render, prompt="x", wait=True))
    require("render" in text.lower(), text)
    report.value("no_render", text)

stub = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
threading.Thread(target=stub.serve_forever, daemon=True).start()
stub_url = f"http://127.0.0.1:{stub.server_address[1]}"

with report.check("retry_after_429"):
    set_prefs(module, server_url=stub_url, api_key="", retries=3, max_retry_wait=5.0)
    Stub.seen.clear()
    started = time.monotonic()
    ok, error = call(ops.refresh_models, wait=True)
    elapsed = time.monotonic() - started
    require(ok, error)
    first = [s for s in Stub.seen if s[2] == "/openapi.json"]
    require(len(first) == 2, f"/openapi.json asked {len(first)} times: {Stub.seen}")
    require(first[1][0] - first[0][0] >= 0.9, "the retry did not wait for Retry-After")
    require(wm.bildwerk_catalog.version == "9.9", wm.bildwerk_catalog.version)
    report.value("retry", {"elapsed": round(elapsed, 2), "requests": len(Stub.seen)})

with report.check("busy_429_gives_up"):
    set_prefs(module, retries=1)
    Stub.seen.clear()
    text = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
    posts = [s for s in Stub.seen if s[1] == "POST"]
    require(len(posts) == 2, f"{len(posts)} POSTs (1 + 1 retry expected)")
    require("429" in text and "busy" in text and "1 retries" in text, text)
    report.value("busy", text)

with report.check("not_a_bildwerk"):
    set_prefs(module, server_url=stub_url + "/html")
    Stub.busy_first = 0
    text = one_line_error(*call(ops.test_connection, wait=True))
    require("JSON" in text or "Bildwerk" in text, text)
    report.value("not_bildwerk", text)

with report.check("bad_url"):
    set_prefs(module, server_url="ftp://example")
    text = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
    require("URL" in text, text)
    report.value("bad_url", text)

with report.check("online_access"):
    # Blender 4.2+ with "Allow Online Access" off (the default of the bpy module): a
    # server beyond this machine and LAN is not contacted; loopback servers still are.
    if getattr(bpy.app, "online_access", True) is False:
        set_prefs(module, server_url="http://bildwerk.example.org:8000")
        text = one_line_error(*call(ops.txt2img, prompt="x", wait=True))
        require("online access" in text, text)
        report.value("online_access", text)
    else:
        report.value("online_access", "on (or Blender < 4.2): nothing to check")

stub.shutdown()

with report.check("open_file_drops_a_running_job"):
    set_prefs(module, server_url=args.url, api_key=args.key, retries=3)
    bpy.context.scene.bildwerk.prompt = "a long sequence"
    image = bpy.data.images.new("init", 64, 64)
    image.pixels[:] = [0.5] * (64 * 64 * 4)
    ok, error = call(ops.img2seq, image="init", frames=24, steps=8, strength=0.9, wait=False)
    require(ok, error)
    require(wm.bildwerk_status.busy, "not running")
    bpy.ops.wm.read_homefile()
    status = bpy.context.window_manager.bildwerk_status
    require(not status.busy, "still busy after opening another file")
    require("another file" in status.message, status.message)
    ok, error = call(ops.txt2img, prompt="after", wait=True)
    require(ok, f"a new run after the reload: {error}")

with report.check("disable_and_enable"):
    bpy.ops.preferences.addon_disable(module=module)
    require(not hasattr(bpy.types, "BILDWERK_PT_node_run"), "a panel survived disabling")
    require(not hasattr(bpy.types.Scene, "bildwerk"), "scene settings survived")
    bpy.ops.preferences.addon_enable(module=module)
    require(hasattr(bpy.types, "BILDWERK_PT_node_run"), "not registered again")
    require(module in bpy.context.preferences.addons, "not enabled again")

report.value("done", True)
