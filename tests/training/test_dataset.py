"""The dataset builder: recorded requests (rated through the HTTP API) or a captioned
folder, exported in the Hugging Face imagefolder layout; the layout is checked here
without the `datasets` package."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import training.dataset as dataset
from app.cli import cli
from tests.utils.images import box_mask, data_url, kiosk_mask, png_bytes, scene
from training.dataset import DatasetError, export_folder, export_records

FAST = {"steps": 2, "width": 64, "height": 64}
MASK_BOX = (8, 8, 30, 30)


# -- helpers ------------------------------------------------------------------------------
def make_records(client) -> dict[str, str]:
    """Five records: two rated for training (one of them inpaint), one rated low, one
    flagged `exclude`, one unrated."""
    def txt2img(seed: int, **extra) -> str:
        r = client.post("/txt2img", json={**FAST, "prompt": f"a lighthouse {seed}",
                                          "seed": seed, **extra})
        assert r.status_code == 200, r.text
        return r.json()["record_id"]

    ids = {"best": txt2img(5, num_images=2)}
    r = client.post("/inpaint", json={**FAST, "prompt": "a lake in the town", "seed": 7,
                                      "image": data_url(scene(64, 64)),
                                      "mask": data_url(box_mask((64, 64), MASK_BOX))})
    assert r.status_code == 200, r.text
    ids["inpaint"] = r.json()["record_id"]
    ids["low"], ids["excluded"], ids["unrated"] = txt2img(9), txt2img(11), txt2img(13)
    for key, body in (("best", {"rating": 5, "flags": ["good", "use_for_training"]}),
                      ("inpaint", {"rating": 4, "flags": ["use_for_training"]}),
                      ("low", {"rating": 2}),
                      ("excluded", {"rating": 5, "flags": ["exclude"]})):
        assert client.post(f"/records/{ids[key]}/feedback", json=body).status_code == 200
    return ids


def source(client) -> tuple[str, Path]:
    settings = client.app.state.settings
    return settings.resolved_database_url, settings.blobs_dir


def blob(client, sha: str) -> bytes:
    return (client.app.state.settings.blobs_dir / sha[:2] / sha).read_bytes()


def record(client, record_id: str) -> dict:
    return client.get(f"/records/{record_id}").json()


def check_layout(out: Path) -> list[dict]:
    """What imagefolder needs: one metadata file that parses, every `*file_name` names an
    image under `out` that decodes, nothing else in `out`, no temp folder left beside."""
    metadata = [p for p in (out / "metadata.jsonl", out / "metadata.csv") if p.exists()]
    assert len(metadata) == 1, list(out.iterdir())
    text = metadata[0].read_text(encoding="utf-8")
    if metadata[0].suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    named = {metadata[0]}
    for row in rows:
        assert row["file_name"] and "text" in row
        for key, value in row.items():
            if (key == "file_name" or key.endswith("_file_name")) and value:
                path = out / value
                assert path.resolve().is_relative_to(out.resolve()) and path.is_file(), value
                with Image.open(path) as image:
                    image.load()
                named.add(path)
    assert {p for p in out.rglob("*") if p.is_file()} == named  # no stray files
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return rows


def ids_of(rows: list[dict]) -> set[str]:
    return {row["file_name"].split("_")[0] for row in rows}


# -- records ------------------------------------------------------------------------------
def test_export_writes_rated_records_in_the_imagefolder_layout(client, tmp_path):
    ids = make_records(client)
    url, blobs = source(client)
    out = tmp_path / "set"
    result = export_records(url, blobs, out, min_rating=4)
    assert (result.out, result.count, result.skipped) == (out, 3, 0)
    assert result.metadata_path == out / "metadata.jsonl"
    rows = check_layout(out)
    assert [row["file_name"] for row in rows] == [  # oldest record first
        f"{ids['best']}_0.png", f"{ids['best']}_1.png", f"{ids['inpaint']}_0.png"]
    assert list(rows[0]) == ["file_name", "text", "record_id", "seed", "endpoint", "model",
                             "rating", "flags", "mask_file_name", "input_file_name"]
    for row in rows:
        rec = record(client, row["record_id"])
        index = int(row["file_name"].rsplit("_", 1)[1].removesuffix(".png"))
        output = rec["outputs"][index]
        assert (out / row["file_name"]).read_bytes() == blob(client, output["sha256"])
        assert row["text"] == rec["prompt_used"] == rec["prompt"]
        assert row["seed"] == output["seed"] and row["endpoint"] == rec["endpoint"]
        assert row["model"] == rec["model"] == "tiny-sd15"
        assert row["rating"] == rec["feedback"]["rating"]
        assert row["flags"] == rec["feedback"]["flags"]
    assert [row["seed"] for row in rows[:2]] == [5, 6]
    assert rows[0]["mask_file_name"] is None and rows[0]["input_file_name"] is None

    inpaint = rows[2]
    rec = record(client, ids["inpaint"])
    assert inpaint["mask_file_name"] == f"masks/{ids['inpaint']}.png"
    assert inpaint["input_file_name"] == f"inputs/{ids['inpaint']}.png"
    mask = Image.open(out / inpaint["mask_file_name"])
    applied = Image.open(io.BytesIO(blob(client, rec["mask_applied_sha256"])))
    assert mask.mode == "L" and mask.size == (64, 64)
    assert np.array_equal(np.asarray(mask), np.asarray(applied.convert("L")))
    assert np.asarray(mask)[18, 18] == 255 and np.asarray(mask)[60, 60] == 0  # white: inpainted
    assert (out / inpaint["input_file_name"]).read_bytes() == \
        blob(client, rec["input_image_sha256"])


def test_export_filters(client, tmp_path):
    ids = make_records(client)
    url, blobs = source(client)
    runs = iter(range(100))

    def export(**filters) -> list[dict]:
        out = tmp_path / f"set-{next(runs)}"
        result = export_records(url, blobs, out, **filters)
        rows = check_layout(out)
        assert result.count == len(rows) and result.skipped == 0
        return rows

    assert ids_of(export(min_rating=4, exclude_flags=None)) == {
        ids["best"], ids["inpaint"], ids["excluded"]}
    only_inpaint = export(flags=["use_for_training"], endpoint="inpaint")
    assert ids_of(only_inpaint) == {ids["inpaint"]}
    assert only_inpaint[0]["mask_file_name"] == f"masks/{ids['inpaint']}.png"
    assert ids_of(export(endpoint="inpaint,inpainting")) == {ids["inpaint"]}
    assert ids_of(export(flags=["use_for_training", "good"])) == {ids["best"]}
    txt = export(endpoint="txt2img", min_rating=2)
    assert ids_of(txt) == {ids["best"], ids["low"]}
    assert all("mask_file_name" not in row for row in txt)  # no inpaint rows: no columns
    every = export(client_host="testclient")  # all succeeded ones but the excluded
    assert len(every) == 5 and ids["excluded"] not in ids_of(every)
    assert export(client_host="192.0.2.1") == []
    assert export(key_id="0123456789abcdef") == []
    future = datetime.now(UTC) + timedelta(hours=1)
    assert export(since=future) == []
    assert len(export(until=future.replace(tzinfo=None), exclude_flags=[])) == 6
    assert export(until=datetime.now(UTC) - timedelta(hours=1)) == []
    assert ids_of(export(limit=1)) == {ids["best"]}  # the oldest record
    assert export(status="failed") == []
    no_masks = export(endpoint="inpaint", include_masks=False)
    assert list(no_masks[0]) == list(dataset.RECORD_COLUMNS)

    with pytest.raises(DatasetError):
        export_records(url, blobs, tmp_path / "bad", flags=["Use For Training"])
    with pytest.raises(DatasetError):
        export_records(url, blobs, tmp_path / "bad", fmt="parquet")  # type: ignore[arg-type]
    assert not (tmp_path / "bad").exists()


def test_csv_metadata(client, tmp_path):
    ids = make_records(client)
    url, blobs = source(client)
    result = export_records(url, blobs, tmp_path / "set", min_rating=4, fmt="csv")
    assert result.metadata_path == tmp_path / "set" / "metadata.csv"
    rows = check_layout(tmp_path / "set")
    assert len(rows) == 3 and list(rows[0]) == [
        "file_name", "text", "record_id", "seed", "endpoint", "model", "rating", "flags",
        "mask_file_name", "input_file_name"]
    best = rows[0]
    assert best["record_id"] == ids["best"] and best["text"] == "a lighthouse 5"
    assert (best["seed"], best["rating"], best["flags"]) == ("5", "5", "good;use_for_training")
    assert best["mask_file_name"] == "" and best["input_file_name"] == ""
    assert rows[2]["mask_file_name"] == f"masks/{ids['inpaint']}.png"
    assert dataset.read_metadata(result.metadata_path) == rows


def test_records_with_missing_blobs_are_skipped_and_counted(client, tmp_path):
    ids = make_records(client)
    url, blobs = source(client)
    best, inpaint = record(client, ids["best"]), record(client, ids["inpaint"])
    (blobs / best["outputs"][1]["sha256"][:2] / best["outputs"][1]["sha256"]).unlink()
    # Without the applied mask, the mask as sent is used (read with the mask convention).
    applied = inpaint["mask_applied_sha256"]
    assert applied != inpaint["mask_sha256"]
    (blobs / applied[:2] / applied).unlink()

    result = export_records(url, blobs, tmp_path / "set", min_rating=4)
    assert (result.count, result.skipped) == (1, 1)
    rows = check_layout(tmp_path / "set")
    assert ids_of(rows) == {ids["inpaint"]}  # nothing of the skipped record was written
    mask = Image.open(tmp_path / "set" / rows[0]["mask_file_name"])
    assert mask.mode == "L"
    assert np.array_equal(np.asarray(mask), np.asarray(box_mask((64, 64), MASK_BOX)))

    # A blob whose content no longer matches its name counts as missing too.
    sha = inpaint["input_image_sha256"]
    (blobs / sha[:2] / sha).write_bytes(b"not the input")
    result = export_records(url, blobs, tmp_path / "set2", min_rating=4)
    assert (result.count, result.skipped) == (0, 2)
    assert check_layout(tmp_path / "set2") == []


def test_writing_is_atomic_and_never_overwrites_by_accident(client, tmp_path, monkeypatch):
    make_records(client)
    url, blobs = source(client)
    out = tmp_path / "set"
    out.mkdir()  # an empty folder is fine
    assert export_records(url, blobs, out, min_rating=5).count == 2
    first = sorted(p.name for p in out.iterdir())

    with pytest.raises(FileExistsError, match="not empty"):
        export_records(url, blobs, out, min_rating=4)
    assert sorted(p.name for p in out.iterdir()) == first

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(dataset, "_write_metadata", broken)
        with pytest.raises(RuntimeError):
            export_records(url, blobs, out, min_rating=4, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == first  # the old set, whole
    check_layout(out)

    assert export_records(url, blobs, out, min_rating=4, overwrite=True).count == 3
    assert len(check_layout(out)) == 3

    data_dir = client.app.state.settings.data_dir
    with pytest.raises(DatasetError, match="delete"):  # would remove the blob store
        export_records(url, blobs, data_dir, overwrite=True)
    assert blobs.is_dir() and any(blobs.iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError):
        export_records(url, blobs, tmp_path / "file", overwrite=True)


def test_cli_round_trip(client, tmp_path, monkeypatch):
    ids = make_records(client)
    settings = client.app.state.settings
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BILDWERK_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "set"

    def run(*args: str, code: int = 0):
        result = CliRunner().invoke(cli, ["dataset", "export", "--out", str(out), *args])
        assert result.exit_code == code, result.output
        return result.output

    said = run("--min-rating", "4", "--flag", "use_for_training", "--format", "csv")
    assert "wrote 3 images" in said and "0 skipped" in said
    assert len(check_layout(out)) == 3 and (out / "metadata.csv").exists()
    assert "not empty" in run("--endpoint", "inpaint", code=2)
    said = run("--endpoint", "inpaint", "--since", "2026-01-01", "--overwrite")
    assert "wrote 1 images" in said
    rows = check_layout(out)
    assert ids_of(rows) == {ids["inpaint"]} and (out / "masks" / f"{ids['inpaint']}.png").exists()
    run("--until", "2000-01-01", "--overwrite")
    assert check_layout(out) == []
    run("--exclude-flag", "good", "--min-rating", "5", "--no-masks", "--overwrite")
    assert ids_of(check_layout(out)) == {ids["excluded"]}
    assert "format" in run("--format", "xml", "--overwrite", code=2)
    assert "flag" in run("--flag", "Not A Flag", "--overwrite", code=2)

    folder = tmp_path / "captioned"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(scene(32, 32)))
    (folder / "a.txt").write_text("a harbour")
    said = run("--from-folder", str(folder), "--overwrite")
    assert "wrote 1 images" in said
    assert check_layout(out) == [{"file_name": "a.png", "text": "a harbour"}]


def test_csv_neutralises_a_visitors_formula_prompt_and_jsonl_keeps_it(client, tmp_path,
                                                                     monkeypatch):
    from training._data import read_examples  # imports torch: only here

    formulas = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)"]
    for prompt in formulas:  # as typed at the kiosk
        r = client.post("/inpainting/", json={
            "prompt": prompt, "image": data_url(scene(64, 64)),
            "mask": data_url(kiosk_mask((64, 64), MASK_BOX)), "model": 0})
        assert r.status_code == 200, r.text
        record_id = r.headers["x-bildwerk-record-id"]
        assert record(client, record_id)["prompt"] == prompt
        assert client.post(f"/records/{record_id}/feedback",
                           json={"rating": 5}).status_code == 200
    settings = client.app.state.settings
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BILDWERK_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.chdir(tmp_path)

    def export(out: Path, fmt: str) -> Path:
        result = CliRunner().invoke(cli, ["dataset", "export", "--out", str(out),
                                          "--endpoint", "inpainting", "--format", fmt])
        assert result.exit_code == 0 and "wrote 4 images" in result.output, result.output
        return out / f"metadata.{fmt}"

    with export(tmp_path / "csv-set", "csv").open(newline="", encoding="utf-8") as fh:
        cells = list(csv.DictReader(fh))
    exact = [json.loads(line) for line in
             export(tmp_path / "jsonl-set", "jsonl").read_text().splitlines()]
    used = [record(client, row["record_id"])["prompt_used"] for row in exact]
    assert [row["text"] for row in exact] == used
    assert [text[0] for text in used] == [formula[0] for formula in formulas]
    assert [row["text"] for row in cells] == ["'" + text for text in used]
    assert [row["seed"] for row in cells] == [str(row["seed"]) for row in exact]  # a number
    assert len(check_layout(tmp_path / "csv-set")) == 4  # the file names still resolve
    assert [row["text"] for row in dataset.read_metadata(tmp_path / "csv-set/metadata.csv")
            ] == used
    assert [example.text for example in read_examples(tmp_path / "csv-set")] == used


# -- folders ------------------------------------------------------------------------------
def test_folder_of_captioned_images(tmp_path):
    src = tmp_path / "satbilder"
    (src / "olpe").mkdir(parents=True)
    (src / ".cache").mkdir()
    a, b = png_bytes(scene(32, 32, seed=1)), scene(40, 32, seed=2)
    (src / "a.png").write_bytes(a)
    (src / "a.txt").write_text("  satellite image of a lake near Olpe\n")
    buf = io.BytesIO()
    b.save(buf, format="JPEG")
    (src / "olpe" / "b.jpg").write_bytes(buf.getvalue())
    (src / "olpe" / "b.jpg.txt").write_text("satellite image of the old town")  # a.png.txt style
    (src / "uncaptioned.png").write_bytes(png_bytes(scene(16, 16)))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "broken.txt").write_text("never")
    (src / ".cache" / "c.png").write_bytes(a)
    (src / ".cache" / "c.txt").write_text("hidden")
    (src / "notes.md").write_text("not an image")

    result = export_folder(src, tmp_path / "out")
    assert (result.count, result.skipped) == (2, 2)
    rows = check_layout(tmp_path / "out")
    assert rows == [{"file_name": "a.png", "text": "satellite image of a lake near Olpe"},
                    {"file_name": "olpe/b.jpg", "text": "satellite image of the old town"}]
    assert (tmp_path / "out" / "a.png").read_bytes() == a
    assert (tmp_path / "out" / "olpe" / "b.jpg").read_bytes() == buf.getvalue()

    result = export_folder(src, tmp_path / "out-csv", fmt="csv")
    assert result.metadata_path.name == "metadata.csv"
    assert check_layout(tmp_path / "out-csv") == rows

    with pytest.raises(FileExistsError):
        export_folder(src, tmp_path / "out")
    with pytest.raises(DatasetError):
        export_folder(src, src / "inside")
    with pytest.raises(DatasetError):
        export_folder(tmp_path / "missing", tmp_path / "x")


@pytest.mark.parametrize("listing", ["metadata.jsonl", "metadata.csv"])
def test_folder_with_its_own_metadata(tmp_path, listing):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "masks").mkdir()
    (src / "data" / "a.png").write_bytes(png_bytes(scene(32, 32)))
    (src / "masks" / "a.png").write_bytes(png_bytes(box_mask((32, 32), (4, 4, 12, 12))))
    (src / "data" / "b.png").write_bytes(png_bytes(scene(32, 32, seed=3)))
    (src / "data" / "b.txt").write_text("from the caption file")
    (tmp_path / "outside.png").write_bytes(png_bytes(scene(8, 8)))
    rows = [{"file_name": "data/a.png", "text": "a lake", "mask_file_name": "masks/a.png",
             "source": "google maps"},
            {"file_name": "data/b.png"},
            {"file_name": "../outside.png", "text": "escapes the folder"},
            {"file_name": "data/missing.png", "text": "gone"}]
    if listing.endswith(".jsonl"):
        (src / listing).write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with (src / listing).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["file_name", "text", "mask_file_name",
                                                    "source"])
            writer.writeheader()
            writer.writerows(rows)

    result = export_folder(src, tmp_path / "out")
    assert (result.count, result.skipped) == (2, 2)
    got = check_layout(tmp_path / "out")
    assert [(r["file_name"], r["text"]) for r in got] == [
        ("data/a.png", "a lake"), ("data/b.png", "from the caption file")]
    assert got[0]["mask_file_name"] == "masks/a.png" and got[0]["source"] == "google maps"
    assert not (tmp_path / "out" / "outside.png").exists()


def test_loads_with_hf_datasets_when_installed(client, tmp_path):
    """Bildwerk does not depend on `datasets`; where it is installed, the export loads."""
    datasets = pytest.importorskip("datasets")
    ids = make_records(client)
    url, blobs = source(client)
    export_records(url, blobs, tmp_path / "set", min_rating=4)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "set"),
                                   cache_dir=str(tmp_path / "hf-cache"), split="train")
    assert len(loaded) == 3
    assert {"image", "text", "record_id", "rating", "flags", "mask", "input"} <= set(
        loaded.column_names)  # *_file_name columns load as images (datasets 5.2)
    row = loaded[loaded["record_id"].index(ids["inpaint"])]
    assert row["image"].size == row["mask"].size == row["input"].size == (64, 64)
    assert row["text"] == "a lake in the town" and row["flags"] == ["use_for_training"]
    assert loaded[0]["mask"] is None  # a txt2img row
