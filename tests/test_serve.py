"""The README's serve path: a real uvicorn process on the embedded default model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_serves_txt2img_on_an_empty_models_dir(tmp_path):
    port = _free_port()
    env = {**os.environ, "BILDWERK_DATA_DIR": str(tmp_path / "data"),
           "BILDWERK_MODELS_DIR": str(tmp_path / "models"), "BILDWERK_DEVICE": "auto",
           "HF_HUB_OFFLINE": "1"}
    env.pop("BILDWERK_DATABASE_URL", None)
    env.pop("BILDWERK_DEFAULT_MODEL", None)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("server did not become ready")
        r = httpx.post(f"{base}/txt2img", json={"prompt": "a lighthouse"}, timeout=120)
        assert r.status_code == 200, r.text
        image = r.json()["images"][0]
        png = httpx.get(base + image["url"], timeout=10)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "data" / "bildwerk.db").exists()
        # the embedded default is the shipped micro model, copied into the data dir
        assert (tmp_path / "data" / "embedded" / "bildwerk-micro" / "model_index.json").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises SIGTERM (exit -15).
    assert proc.returncode in (0, -15), out.decode()[-2000:]
    assert b"Application shutdown complete" in out
