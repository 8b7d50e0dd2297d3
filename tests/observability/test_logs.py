"""Structured logs (app/observability/logs.py): JSON lines carrying job_id and record_id
while a job runs, text for people."""

from __future__ import annotations

import json
import logging
import time

from app.observability.logs import build_formatter, job_context, resolve_format

FAST = {"prompt": "a harbour", "steps": 2, "width": 64, "height": 64, "seed": 2}


def json_lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_a_jobs_lines_carry_its_job_and_record_ids(make_client, capsys):
    client = make_client(log_format="json")
    capsys.readouterr()
    r = client.post("/txt2img", json=FAST)  # the first job loads the model too
    assert r.status_code == 200, r.text
    ids = {"job_id": r.json()["job_id"], "record_id": r.json()["record_id"]}
    err, deadline = "", time.monotonic() + 30
    while "job finished" not in err and time.monotonic() < deadline:  # logged after the
        err += capsys.readouterr().err  # answer went out
        time.sleep(0.02)
    lines = json_lines(err)
    messages = [line.get("message", "") for line in lines]
    started = next(i for i, m in enumerate(messages) if m.startswith("job started"))
    finished = next(i for i, m in enumerate(messages) if m.startswith("job finished"))
    inside = lines[started:finished + 1]
    assert any(line["message"].startswith("model tiny-sd15 loaded") for line in inside)
    for line in inside:  # the worker is the only thread logging meanwhile
        assert {k: line.get(k) for k in ids} == ids, line
        assert line["level"] and line["logger"].startswith("bildwerk") and line["timestamp"]
    assert lines[finished]["endpoint"] == "txt2img"
    # after the job the context is gone
    client.get("/models")
    client.app.state.registry.refresh()  # logs "models: ..." on this thread
    after = json_lines(capsys.readouterr().err)
    assert after and all("job_id" not in line for line in after)


def test_text_logs_are_not_json(make_client, capsys):
    client = make_client(log_format="text")
    capsys.readouterr()
    r = client.post("/txt2img", json=FAST)
    assert r.status_code == 200, r.text
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "job started" in line)
    assert not line.lstrip().startswith("{")
    assert f"job_id={r.json()['job_id']}" in line


def test_auto_is_text_on_a_terminal_and_json_otherwise():
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    assert resolve_format("auto", Stream(True)) == "text"
    assert resolve_format("auto", Stream(False)) == "json"
    assert resolve_format("json", Stream(True)) == "json"
    assert resolve_format("text", Stream(False)) == "text"


def test_the_json_formatter_renders_stdlib_records_with_the_job_context():
    import io

    class Job:
        id, record_id, endpoint = "j-1", "r-1", "img2img"

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(build_formatter("json"))
    logger = logging.getLogger("bildwerk.test-observability")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with job_context(Job()):
            logger.info("step %d of %d", 1, 2)
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("it failed")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, failed, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "step 1 of 2"
    assert (first["job_id"], first["record_id"], first["endpoint"]) == ("j-1", "r-1", "img2img")
    assert failed["level"] == "error" and "ValueError: boom" in failed["exception"]
    assert failed["job_id"] == "j-1"
    assert "job_id" not in outside
