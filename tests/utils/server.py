"""A real ``bildwerk serve`` process on 127.0.0.1 for tests that need one (signals, kill -9,
slow sockets)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``bildwerk serve`` on the embedded model, with its own data directory."""

    def __init__(self, data_dir: Path, models_dir: Path, **env: str) -> None:
        self.data_dir, self.models_dir, self.env = data_dir, models_dir, env
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def start(self, ready_timeout: float = 90, wait: bool = True) -> Server:
        """Start the process; with ``wait`` (default) return once /ready answers 200
        (else :meth:`wait_ready` later, e.g. to start several servers at once)."""
        port = _free_port()
        env = {**os.environ}
        for name in ("BILDWERK_DATABASE_URL", "BILDWERK_DEFAULT_MODEL", "BILDWERK_AUTH_MODE"):
            env.pop(name, None)  # the test's own settings only
        env.update({"BILDWERK_DATA_DIR": str(self.data_dir),
                    "BILDWERK_MODELS_DIR": str(self.models_dir), "BILDWERK_DEVICE": "cpu",
                    "BILDWERK_TORCH_THREADS": "1", "BILDWERK_MAX_STEPS": "1000",
                    "HF_HUB_OFFLINE": "1", **self.env})
        # Its own process group: stop() ends every process it started (BILDWERK_WORKERS).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.base = f"http://127.0.0.1:{port}"
        return self.wait_ready(ready_timeout) if wait else self

    def wait_ready(self, ready_timeout: float = 90) -> Server:
        assert self.proc is not None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.output())
            try:
                if httpx.get(f"{self.base}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def post(self, path: str, timeout: float = 30, **kwargs) -> httpx.Response:
        return httpx.post(self.base + path, timeout=timeout, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kwargs)

    def wait_running(self, job_id: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = self.get(f"/jobs/{job_id}").json()
            if status["status"] == "running" and status["progress"]["step"] >= 1:
                return
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not start: {status}")

    def output(self) -> str:
        assert self.proc is not None
        self._kill()
        out, _ = self.proc.communicate(timeout=30)
        return out.decode(errors="replace")

    def stop(self) -> None:
        """Kill the server's whole process group, its own workers too even when it died
        first."""
        if self.proc is not None:
            self._kill()
            if self.proc.returncode is None:
                self.proc.communicate(timeout=30)

    def _kill(self) -> None:
        """SIGKILL the server and every process of its group (uvicorn's workers)."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
