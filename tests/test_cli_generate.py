"""`bildwerk generate`: a batch client over HTTP, run for real against a live `bildwerk
serve` process (tests/utils/server.py) on the tiny random model at 64x64 and 2 steps.

The server holds an admin key from the start, so every run below passes it through
BILDWERK_API_KEY and finds the server through BILDWERK_URL (both honoured everywhere),
and a run without a key gets the 401. What the server stored is read back from
GET /records and GET /blobs. The retry rules (429, 503) run offline against an
httpx.MockTransport.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.batch import BatchClient, BatchItem, BatchReport, run_batch
from app.cli import cli
from app.persistence.database import Database
from app.prompting.exports import append_csv, append_jsonl
from app.security.keys import ApiKeyRepository
from tests.utils.server import Server

FAST = ["--width", "64", "--height", "64", "--steps", "2", "--no-progress"]


@dataclass
class Live:
    server: Server
    admin: str  # an admin key's secret
    db: Database

    @property
    def url(self) -> str:
        return self.server.base

    def get(self, path: str, **params) -> httpx.Response:
        r = self.server.get(path, params=params, headers={"Authorization": f"Bearer {self.admin}"})
        assert r.status_code == 200, r.text
        return r

    def records(self) -> list[dict]:
        """Every txt2img record, newest first."""
        return self.get("/records", endpoint="txt2img", limit=500).json()["items"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, embedded_template: Path):
    root = tmp_path_factory.mktemp("generate-server")
    data = root / "data"
    shutil.copytree(embedded_template, data / "embedded" / "bildwerk-tiny")
    (root / "models").mkdir()
    # BILDWERK_LOOPBACK_SCOPES none: a keyless call from this loopback test must get the
    # 401 a script on another host gets.
    server = Server(data, root / "models", BILDWERK_EMBEDDED_MODEL_ID="bildwerk-tiny",
                    BILDWERK_LOOPBACK_SCOPES="none").start()
    # Every poll is an access-log line: read them as they come, or the pipe fills up and
    # the server blocks on its next log write.
    drain = threading.Thread(target=server.proc.stdout.read, daemon=True)
    drain.start()
    db = Database(f"sqlite:///{(data / 'bildwerk.db').resolve()}")
    try:
        _, admin = ApiKeyRepository(db).create("generate-tests", ["admin"])
        yield Live(server, admin, db)
    finally:
        server.proc.kill()
        server.proc.wait(timeout=30)
        drain.join(10)
        db.dispose()


def generate(live: Live, *args: str, key: str | None = "admin", **env: str | None):
    """Run `bildwerk generate ARGS` with BILDWERK_URL/BILDWERK_API_KEY set."""
    env = {"BILDWERK_URL": live.url,
           "BILDWERK_API_KEY": live.admin if key == "admin" else key, **env}
    return CliRunner().invoke(cli, ["generate", *args], env=env)


def info(folder: Path) -> dict:
    return json.loads((folder / "info.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_prompt_writes_the_stored_pngs_and_the_batch_info(live, tmp_path):
    out = tmp_path / "lighthouse"
    result = generate(live, "a lighthouse at dusk", "--out", str(out), "--num-images", "2",
                      "--seed", "41", "--negative-prompt", "fog", "--scheduler", "ddim",
                      "--guidance-scale", "5", "--width", "64", "--height", "64",
                      "--steps", "2")  # with the progress bar
    assert result.exit_code == 0, result.output
    assert "1 item, 1 made (2 images)" in result.output and "img" in result.output

    data = info(out)
    assert data["server"] == live.url and data["source"] is None
    assert data["summary"] == {"items": 1, "succeeded": 1, "failed": 0, "images": 2}
    [entry] = data["items"]
    assert entry["status"] == "succeeded" and entry["prompt"] == "a lighthouse at dusk"
    assert [img["file"] for img in entry["images"]] == [
        "0001-a-lighthouse-at-dusk-1.png", "0001-a-lighthouse-at-dusk-2.png"]
    assert [img["seed"] for img in entry["images"]] == [41, 42]

    record = live.get(f"/records/{entry['record_id']}").json()
    assert record["job_id"] == entry["job_id"] and record["status"] == "succeeded"
    assert record["negative_prompt"] == "fog" and record["scheduler"] == "ddim"
    assert record["params"]["guidance_scale"] == 5.0 and record["params"]["steps"] == 2
    assert [o["sha256"] for o in record["outputs"]] == [i["sha256"] for i in entry["images"]]
    assert entry["parameters"]["seeds"] == [41, 42] == [o["seed"] for o in record["outputs"]]
    for img in entry["images"]:
        on_disk = (out / img["file"]).read_bytes()
        assert hashlib.sha256(on_disk).hexdigest() == img["sha256"]
        assert on_disk == live.get(f"/blobs/{img['sha256']}").content  # bytes unchanged
        assert on_disk.startswith(b"\x89PNG\r\n\x1a\n")

    md = (out / "info.md").read_text()
    assert md.startswith("# lighthouse\n") and "1 item, 1 succeeded, 0 failed, 2 images" in md
    assert "| # | image | prompt | seed | size | steps |" in md
    assert "[0001-a-lighthouse-at-dusk-2.png](0001-a-lighthouse-at-dusk-2.png)" in md
    assert entry["record_id"] in md and entry["job_id"] in md and "| 42 | 64×64 | 2 |" in md
    assert not list(out.glob(".*.tmp"))


def test_prompts_output_is_read_as_is_and_concurrency_is_bounded(live, tmp_path):
    """`bildwerk prompts` writes its JSON Lines with append_jsonl and its CSV with
    append_csv (app/prompting/exports.py); the prompts come from the same expander through
    POST /prompt-expand. Its recommended params (a style's 30 steps) yield to --steps."""
    expanded = live.server.post("/prompt-expand", headers={
        "Authorization": f"Bearer {live.admin}"}, json={
        "idea": "a lighthouse", "style": "watercolor", "count": 6, "seed": 1,
        "provider": "local"}).json()["prompts"]
    jsonl, csv_file = tmp_path / "prompts.jsonl", tmp_path / "prompts.csv"
    append_jsonl(jsonl, expanded)
    append_csv(csv_file, expanded[:2])
    assert expanded[0]["params"]["steps"] == 30 and expanded[0]["style"] == "watercolor"
    before = {r["id"] for r in live.records()}

    out = tmp_path / "batch"
    # 10 steps: each job lasts long enough that two of them always overlap
    result = generate(live, "--file", str(jsonl), "--out", str(out), "--concurrency", "2",
                      "--width", "64", "--height", "64", "--steps", "10", "--no-progress")
    assert result.exit_code == 0, result.output
    entries = info(out)["items"]
    assert [e["index"] for e in entries] == [1, 2, 3, 4, 5, 6]
    for entry, line in zip(entries, expanded, strict=True):
        assert entry["prompt"] == line["prompt"] and entry["title"] == line["title"]
        assert entry["metatags"] == line["metatags"]
        assert entry["request"] == {"prompt": line["prompt"],
                                    "negative_prompt": line["negative_prompt"], "steps": 10,
                                    "guidance_scale": 7.0, "width": 64, "height": 64}
    assert f"| {expanded[0]['title']} |" in (out / "info.md").read_text()

    made = [r for r in live.records() if r["id"] not in before]
    assert sorted(r["id"] for r in made) == sorted(e["record_id"] for e in entries)
    assert {r["prompt"] for r in made} == {line["prompt"] for line in expanded}
    # Never more than --concurrency jobs open at once (accepted and not yet finished), and
    # the limit was used.
    spans = [(datetime.fromisoformat(r["created_at"]), datetime.fromisoformat(r["finished_at"]))
             for r in made]
    most = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert most == 2, spans

    result = generate(live, "-f", str(csv_file), "--out", str(tmp_path / "from-csv"), *FAST)
    assert result.exit_code == 0, result.output
    rows = info(tmp_path / "from-csv")["items"]
    assert [r["prompt"] for r in rows] == [line["prompt"] for line in expanded[:2]]
    assert rows[0]["title"] == expanded[0]["title"] and rows[0]["request"]["steps"] == 2


def test_csv_columns_map_to_txt2img_fields_and_override_the_options(live, tmp_path):
    prompts = tmp_path / "shots.csv"
    prompts.write_text("prompt,negative_prompt,seed,steps,scheduler,num_images,colour\n"
                       "a red circle,blurry,7,3,euler,2,red\n"
                       "a blue square,,8,,,,blue\n")
    out = tmp_path / "shots"
    result = generate(live, "-f", str(prompts), "--out", str(out), "--negative-prompt",
                      "text", *FAST)
    assert result.exit_code == 0, result.output
    assert "ignoring columns that are not POST /txt2img fields: colour" in result.output
    first, second = info(out)["items"]
    assert first["request"] == {"prompt": "a red circle", "negative_prompt": "blurry",
                                "seed": 7, "steps": 3, "scheduler": "euler", "num_images": 2,
                                "width": 64, "height": 64}
    assert second["request"] == {"prompt": "a blue square", "negative_prompt": "text",
                                 "seed": 8, "steps": 2, "width": 64, "height": 64}
    record = live.get(f"/records/{first['record_id']}").json()
    assert record["params"]["steps"] == 3 and record["scheduler"] == "euler"
    assert record["params"]["batch"] is False  # --exact (the default): never batched
    assert [o["seed"] for o in record["outputs"]] == [7, 8]
    assert [i["file"] for i in first["images"]] == ["0001-a-red-circle-1.png",
                                                    "0001-a-red-circle-2.png"]


def test_no_exact_lets_the_server_batch_the_items(live, tmp_path):
    out = tmp_path / "shared"
    result = generate(live, "a grey cat", "--out", str(out), "--no-exact", *FAST)
    assert result.exit_code == 0, result.output
    (item,) = info(out)["items"]
    assert "batch" not in item["request"]  # not part of the item (its resume key)
    record = live.get(f"/records/{item['record_id']}").json()
    assert "batch" not in record["params"]  # the server's default: may batch


def test_an_interrupted_batch_resumes_without_redoing_finished_images(live, tmp_path):
    prompts = tmp_path / "list.txt"
    prompts.write_text("a red circle\na green square\n\na blue triangle\na white circle\n")
    out = tmp_path / "batch"
    args = ["--file", str(prompts), "--out", str(out), "--seed", "5", *FAST]
    assert generate(live, *args).exit_code == 0
    first = info(out)["items"]
    assert len(first) == 4
    kept = {e["index"]: (out / e["images"][0]["file"]).stat().st_mtime_ns for e in first}

    # What a kill leaves: info.json written after item 3 (item 4 not listed, its image
    # missing), a stray temporary file; and item 2's image deleted by hand.
    listed = info(out)
    listed["items"] = listed["items"][:3]
    (out / "info.json").write_text(json.dumps(listed))
    (out / first[3]["images"][0]["file"]).unlink()
    (out / first[1]["images"][0]["file"]).unlink()
    (out / ".info.json.999.tmp").write_text('{"items": [')
    before = {r["id"] for r in live.records()}

    result = generate(live, *args)
    assert result.exit_code == 0, result.output
    assert "4 items, 2 already done, 2 made (2 images)" in result.output
    again = [r for r in live.records() if r["id"] not in before]
    assert sorted(r["prompt"] for r in again) == ["a green square", "a white circle"]
    now = info(out)["items"]
    assert [e["status"] for e in now] == ["succeeded"] * 4
    assert [e["record_id"] for e in now] == [
        first[0]["record_id"], again_id(again, "a green square"), first[2]["record_id"],
        again_id(again, "a white circle")]
    for old, new in zip(first, now, strict=True):  # same request and seed: same bytes
        assert new["images"][0]["sha256"] == old["images"][0]["sha256"]
        assert sha(out / new["images"][0]["file"]) == new["images"][0]["sha256"]
    for index in (1, 3):  # untouched
        assert (out / now[index - 1]["images"][0]["file"]).stat().st_mtime_ns == kept[index]

    # Nothing left to do: no request at all.
    before = {r["id"] for r in live.records()}
    result = generate(live, *args)
    assert result.exit_code == 0 and "4 already done, 0 made" in result.output
    # A damaged image is made again; a cut-off info.json is set aside and all is remade.
    (out / now[2]["images"][0]["file"]).write_bytes(b"\x89PNG cut")
    assert generate(live, *args).exit_code == 0
    (out / "info.json").write_text(json.dumps(info(out))[:200])
    result = generate(live, *args)
    assert result.exit_code == 0 and "could not be read" in result.output
    assert len(list(out.glob("info.json.unreadable-*"))) == 1
    made = [r for r in live.records() if r["id"] not in before]
    assert sorted(r["prompt"] for r in made) == sorted(
        ["a blue triangle", "a red circle", "a green square", "a blue triangle",
         "a white circle"])
    assert info(out)["summary"] == {"items": 4, "succeeded": 4, "failed": 0, "images": 4}


def again_id(records: list[dict], prompt: str) -> str:
    return next(r["id"] for r in records if r["prompt"] == prompt)


def test_a_bad_item_fails_with_the_servers_error_and_is_tried_again(live, tmp_path):
    prompts = tmp_path / "sizes.csv"
    prompts.write_text("prompt,width\na red circle,64\na blue square,65\n")
    out = tmp_path / "sizes"
    args = ["-f", str(prompts), "--out", str(out), *FAST]
    result = generate(live, *args)
    assert result.exit_code == 1, result.output
    assert "item 2 (sizes.csv:3) failed: 422 invalid_input (width)" in result.output
    assert "must be a multiple of 8" in result.output
    good, bad = info(out)["items"]
    assert good["status"] == "succeeded" and bad["status"] == "failed"
    assert bad["error"]["code"] == "invalid_input" and bad["error"]["param"] == "width"
    assert "must be a multiple of 8" in bad["error"]["message"] and bad["http_status"] == 422
    assert bad["images"] == [] and info(out)["summary"]["failed"] == 1
    md = (out / "info.md").read_text()
    assert "## Failed" in md and "`invalid_input`" in md and "multiple of 8" in md

    result = generate(live, *args)  # the failed item is tried again, the good one is not
    assert result.exit_code == 1
    assert "2 items, 1 already done, 0 made (0 images), 1 failed" in result.output
    assert "item 2 (sizes.csv:3) failed" in result.output


def test_keys_urls_and_input_errors_are_readable(live, tmp_path):
    out = tmp_path / "keyed"
    result = generate(live, "a cat", "--out", str(out), *FAST, key=None)
    assert result.exit_code == 2
    assert "401" in result.output and "BILDWERK_API_KEY" in result.output
    assert "an API key is required" in result.output
    assert not (out / "info.json").exists()

    db_key, secret = ApiKeyRepository(live.db).create("batch-script", ["generate"])
    result = generate(live, "a cat", "--out", str(out), "--api-key", secret, *FAST, key=None)
    assert result.exit_code == 0, result.output
    record = live.get(f"/records/{info(out)['items'][0]['record_id']}").json()
    assert record["api_key_id"] == db_key.id
    assert record["client"]["user_agent"] == "bildwerk-generate"

    result = generate(live, "a cat", "--out", str(out), "--url", "http://127.0.0.1:9",
                      "--retries", "0", *FAST, key=secret, BILDWERK_URL=None)
    assert result.exit_code == 0  # everything was already made: no request needed
    result = generate(live, "a dog", "--out", str(tmp_path / "dog"), "--retries", "0", *FAST,
                      key=secret, BILDWERK_URL="http://127.0.0.1:9")
    assert result.exit_code == 2 and "cannot reach the Bildwerk server at " \
        "http://127.0.0.1:9" in result.output and "BILDWERK_URL" in result.output

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,steps\na cat,many\n")
    result = generate(live, "-f", str(bad), *FAST)
    assert result.exit_code == 2 and "bad.csv:2: steps: 'many'" in result.output
    bad.write_text("title,text\nx,y\n")
    result = generate(live, "-f", str(bad), *FAST)
    assert result.exit_code == 2 and "'prompt' column" in result.output
    result = generate(live, *FAST)
    assert result.exit_code == 2 and "give a prompt, or --file" in result.output


# -- the retry rules, offline ---------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\nnot really"
PNG_SHA = hashlib.sha256(PNG).hexdigest()
RESULT = {"job_id": "j1", "record_id": "r1", "model": "m", "provider": "local",
          "prompt": "p", "negative_prompt": "", "parameters": {"steps": 2},
          "images": [{"sha256": PNG_SHA, "url": f"/blobs/{PNG_SHA}", "seed": 3, "width": 64,
                      "height": 64}]}


def fake_server(answers: list):
    """POST /txt2img answers from ``answers`` in turn; jobs succeed at the first poll."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return answers.pop(0)()
        if request.url.path == "/jobs/j1":
            return httpx.Response(200, json={"job_id": "j1", "record_id": "r1",
                                             "status": "succeeded", "result": RESULT})
        if request.url.path == f"/blobs/{PNG_SHA}":
            return httpx.Response(200, content=PNG)
        return httpx.Response(200, json={"status": "ok"})

    return httpx.MockTransport(handle), seen


def run_offline(tmp_path: Path, answers: list, retries: int = 3):
    transport, seen = fake_server(answers)
    report = BatchReport.open(tmp_path, {"server": "http://fake"})

    async def go():
        client = BatchClient("http://fake", "bw_secret", retries=retries, transport=transport)
        try:
            return await run_batch([BatchItem(1, {"prompt": "p"})], report, client,
                                   progress=False, say=lambda line: None)
        finally:
            await client.aclose()

    return asyncio.run(go()), seen


def accepted():
    return httpx.Response(202, json={"job_id": "j1", "record_id": "r1", "status": "queued"})


def full():
    return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {
        "code": "queue_full", "message": "the queue is full", "param": None}})


def draining():
    return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {
        "code": "shutting_down", "message": "the server is shutting down", "param": None}})


def test_429_and_503_are_waited_out_then_a_failure_is_kept_and_retried_next_run(tmp_path):
    summary, seen = run_offline(tmp_path, [full, draining, accepted])
    assert summary.succeeded == 1 and summary.failed == 0
    posts = [r for r in seen if r.method == "POST"]
    assert len(posts) == 3 and posts[0].headers["prefer"] == "respond-async"
    assert all(r.headers["authorization"] == "Bearer bw_secret" for r in seen)
    assert (tmp_path / "0001-p.png").read_bytes() == PNG

    folder = tmp_path / "busy"
    summary, _ = run_offline(folder, [full, full], retries=1)
    assert summary.failed == 1
    [entry] = info(folder)["items"]
    assert entry["status"] == "failed" and entry["http_status"] == 429
    assert entry["error"] == {"code": "queue_full", "message": "the queue is full",
                              "param": None}
    summary, _ = run_offline(folder, [accepted])  # the next run makes it
    assert summary.succeeded == 1 and info(folder)["items"][0]["status"] == "succeeded"


def test_rows_are_typed_like_the_txt2img_fields(tmp_path):
    from app.batch import read_items

    sheet = tmp_path / "sheet.csv"
    sheet.write_text("Prompt,Steps,translate,loras,guidance scale\n"
                     "'=a formula-looking prompt,20.0,yes,\"film:0.5, grain\",6\n")
    [item], warnings = read_items(sheet, {"steps": 4, "seed": 1})
    assert warnings == [] and item.source == "sheet.csv:2"
    assert item.request == {"prompt": "=a formula-looking prompt", "steps": 20, "seed": 1,
                            "translate": True, "guidance_scale": 6.0,
                            "loras": [{"name": "film", "weight": 0.5}, {"name": "grain"}]}
    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"prompt": "a", "loras": [{"name": "x"}], "num_images": 2}\n\n'
                     '{"prompt": "b", "params": {"steps": 30, "width": 128}, "seed": 9}\n')
    first, second = read_items(lines, {"steps": 5})[0]
    assert first.request == {"prompt": "a", "loras": [{"name": "x"}], "num_images": 2,
                             "steps": 5} and first.num_images == 2
    assert second.index == 2 and second.request == {"prompt": "b", "steps": 5, "width": 128}
    assert first.key != second.key == read_items(lines, {"steps": 5})[0][1].key
