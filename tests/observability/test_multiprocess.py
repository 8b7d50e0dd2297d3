"""/metrics with PROMETHEUS_MULTIPROC_DIR: a real ``bildwerk serve`` process writes its
values to the folder and the route reads them back through a MultiProcessCollector."""

from __future__ import annotations

import json

from tests.observability.helpers import SERIES, value
from tests.utils.server import Server

FAST = {"prompt": "a harbour", "steps": 2, "width": 64, "height": 64, "seed": 2}


def test_metrics_in_multiprocess_mode(tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    server = Server(tmp_path / "data", tmp_path / "models", PROMETHEUS_MULTIPROC_DIR=str(folder),
                    BILDWERK_LOG_FORMAT="json").start()
    try:
        r = server.post("/txt2img", json=FAST, timeout=120)
        assert r.status_code == 200, r.text
        metrics = server.get("/metrics")  # loopback, no key: allowed
        assert metrics.status_code == 200, metrics.text
        text = metrics.text
        assert list(folder.glob("*.db"))  # the values live in the folder
        for name in SERIES:
            if name != "bildwerk_gpu_memory_bytes":  # no samples without CUDA
                assert f"# TYPE {name} " in text, name
        assert value(text, "bildwerk_job_duration_seconds_count", endpoint="txt2img",
                     status="succeeded") == 1
        assert value(text, "bildwerk_job_queue_seconds_count") == 1
        assert value(text, "bildwerk_model_load_seconds_count") >= 1
        assert value(text, "bildwerk_jobs_running") == 0
        assert value(text, "http_requests_total", handler="/txt2img") == 1
    finally:
        out = server.output()
    # BILDWERK_LOG_FORMAT=json: uvicorn's lines and ours, one JSON object per line
    # (tqdm's progress bars, "Loading pipeline components...: 40%|...", are no log lines)
    lines = [line for line in out.splitlines() if line.strip() and "%|" not in line]
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(p.get("message", "").startswith("job started") and p.get("job_id")
               for p in parsed)
    assert any("Uvicorn running" in p.get("message", "") for p in parsed), out[-2000:]
    assert len(parsed) == len(lines), [line for line in lines if not line.startswith("{")]
