"""The blob store in an S3 bucket (a real moto server on 127.0.0.1), through the HTTP API,
the ``bildwerk blobs migrate`` command, and at startup."""

from __future__ import annotations

import hashlib
import socket
import threading
import uuid
from pathlib import Path

import pytest

from tests.utils.images import box_mask, data_url, decode, scene

FAST = {"prompt": "a lighthouse at dusk", "steps": 3, "width": 64, "height": 64, "seed": 5}
SECRET = "fake-secret-never-printed"


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """A boto3 client of the moto server; fake credentials in the environment."""
    import boto3

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN",
                 "BILDWERK_BLOB_STORE", "BILDWERK_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key=SECRET)


@pytest.fixture
def bucket(s3) -> str:
    name = f"bildwerk-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def s3_client(make_client, bucket: str, endpoint: str, prefix: str = "blobs"):
    return make_client(blob_store=f"s3://{bucket}/{prefix}", s3_endpoint_url=endpoint)


def test_txt2img_output_lands_in_the_bucket_and_is_served_with_etag(make_client, s3, bucket,
                                                                    s3_endpoint):
    client = s3_client(make_client, bucket, s3_endpoint)
    r = client.post("/txt2img", json=FAST)
    assert r.status_code == 200, r.text
    (image,) = r.json()["images"]
    sha = image["sha256"]
    assert keys(s3, bucket) == [f"blobs/{sha[:2]}/{sha}"]
    stored = s3.get_object(Bucket=bucket, Key=f"blobs/{sha[:2]}/{sha}")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == sha

    blob = client.get(f"/blobs/{sha}")
    assert blob.status_code == 200
    assert blob.content == stored
    assert blob.headers["content-type"] == "image/png"
    assert blob.headers["content-length"] == str(len(stored))
    assert blob.headers["etag"] == f'"{sha}"'
    assert "immutable" in blob.headers["cache-control"]
    assert decode(blob.content).size == (64, 64)
    again = client.get(f"/blobs/{sha}", headers={"If-None-Match": blob.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == f'"{sha}"'
    assert client.get(f"/blobs/{'0' * 64}").status_code == 404
    # nothing went to the local folder
    settings = client.app.state.settings
    assert not settings.blobs_dir.exists() or not any(settings.blobs_dir.rglob("*"))


def test_inpaint_input_and_mask_land_in_the_bucket(make_client, s3, bucket, s3_endpoint):
    client = s3_client(make_client, bucket, s3_endpoint, prefix="deep/er")
    image, mask = scene(64, 64), box_mask((64, 64), (10, 10, 30, 30))
    r = client.post("/inpaint", json={**FAST, "image": data_url(image), "mask": data_url(mask)})
    assert r.status_code == 200, r.text
    record = client.get(f"/records/{r.json()['record_id']}").json()
    stored = keys(s3, bucket)
    for field in ("input_image_sha256", "mask_sha256", "mask_applied_sha256"):
        sha = record[field]
        assert f"deep/er/{sha[:2]}/{sha}" in stored, field
    sent = decode(client.get(f"/blobs/{record['input_image_sha256']}").content)
    assert sent.tobytes() == image.tobytes()
    # and the input is read back from the bucket when a later request names it by hash
    again = client.post("/inpaint", json={**FAST, "image": record["input_image_sha256"],
                                          "mask": data_url(mask)})
    assert again.status_code == 200, again.text
    assert again.json()["images"][0]["sha256"] == r.json()["images"][0]["sha256"]
    assert client.post("/inpaint", json={**FAST, "image": "0" * 64, "mask": data_url(mask)}
                       ).status_code == 422


def test_the_same_content_put_concurrently_gives_one_object(make_client, s3, bucket,
                                                           s3_endpoint):
    blobs = s3_client(make_client, bucket, s3_endpoint).app.state.blobs
    data = b"the same bytes from eight writers" * 1000
    results, errors = [], []
    start = threading.Barrier(8)

    def write() -> None:
        start.wait()
        try:
            results.append(blobs.put(data, "application/octet-stream"))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sha = hashlib.sha256(data).hexdigest()
    assert errors == [] and results == [sha] * 8
    assert keys(s3, bucket) == [f"blobs/{sha[:2]}/{sha}"]
    assert blobs.read(sha) == data


def test_a_file_store_elsewhere_keeps_the_folder_layout(make_client, tmp_path):
    root = tmp_path / "elsewhere"
    client = make_client(blob_store=root.as_uri())
    sha = client.post("/txt2img", json=FAST).json()["images"][0]["sha256"]
    assert (root / sha[:2] / sha).is_file()
    blob = client.get(f"/blobs/{sha}")
    assert blob.status_code == 200 and blob.content == (root / sha[:2] / sha).read_bytes()
    assert client.get(f"/blobs/{sha}", headers={"If-None-Match": f'"{sha}"'}
                      ).status_code == 304


def _write_folder(root: Path, payloads: list[bytes]) -> list[str]:
    shas = []
    for data in payloads:
        sha = hashlib.sha256(data).hexdigest()
        (root / sha[:2]).mkdir(parents=True, exist_ok=True)
        (root / sha[:2] / sha).write_bytes(data)
        shas.append(sha)
    return shas


def test_migrate_copies_a_folder_into_the_bucket_and_resumes(s3, bucket, s3_endpoint,
                                                            tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli

    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("BILDWERK_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "old-blobs"
    shas = _write_folder(folder, [f"blob {i}".encode() * 50 for i in range(5)])
    (folder / shas[0][:2] / ".tmp-half").write_bytes(b"junk")  # not a blob: ignored
    args = ["blobs", "migrate", "--to", f"s3://{bucket}/pre", "--from", folder.as_uri(),
            "--endpoint-url", s3_endpoint]
    runner = CliRunner()

    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "5 copied, 0 already there, 0 failed" in first.output
    assert keys(s3, bucket) == sorted(f"pre/{sha[:2]}/{sha}" for sha in shas)
    for sha in shas:
        body = s3.get_object(Bucket=bucket, Key=f"pre/{sha[:2]}/{sha}")["Body"].read()
        assert body == (folder / sha[:2] / sha).read_bytes()
    assert SECRET not in first.output

    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "0 copied, 5 already there, 0 failed" in second.output

    # a damaged file is reported and not copied; the rest is still done
    new = _write_folder(folder, [b"a new blob"])[0]
    bad = hashlib.sha256(b"what it should be").hexdigest()
    (folder / bad[:2]).mkdir(exist_ok=True)
    (folder / bad[:2] / bad).write_bytes(b"something else")
    third = runner.invoke(cli, args)
    assert third.exit_code == 1
    assert "1 copied, 5 already there, 1 failed" in third.output
    assert f"pre/{new[:2]}/{new}" in keys(s3, bucket)
    assert f"pre/{bad[:2]}/{bad}" not in keys(s3, bucket)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["missing bucket", "no server"])
def test_an_unusable_bucket_stops_the_start_with_its_url(make_client, s3, s3_endpoint, case):
    from app.persistence.blob_stores import BlobStoreUnusable

    if case == "missing bucket":
        store, endpoint, why = "s3://no-such-bucket-here/x", s3_endpoint, "does not exist"
    else:
        endpoint = f"http://127.0.0.1:{_closed_port()}"
        store, why = "s3://some-bucket/x", "cannot be reached"
    with pytest.raises(BlobStoreUnusable) as raised:
        make_client(blob_store=store, s3_endpoint_url=endpoint)
    message = str(raised.value)
    assert store in message and endpoint in message and why in message
    assert SECRET not in message


def test_dataset_export_reads_the_bucket(make_client, s3, bucket, s3_endpoint, tmp_path):
    from training.dataset import export_records

    client = s3_client(make_client, bucket, s3_endpoint)
    sha = client.post("/txt2img", json=FAST).json()["images"][0]["sha256"]
    settings = client.app.state.settings
    result = export_records(settings.resolved_database_url, f"s3://{bucket}/blobs",
                            tmp_path / "set", s3_endpoint_url=s3_endpoint)
    assert (result.count, result.skipped) == (1, 0)
    (png,) = (tmp_path / "set").glob("*.png")
    assert hashlib.sha256(png.read_bytes()).hexdigest() == sha


def test_staging_files_of_a_killed_write_are_swept(tmp_path):
    from app.persistence.blobs import sweep_temp_files

    sha = hashlib.sha256(b"x").hexdigest()
    (tmp_path / sha[:2]).mkdir()
    (tmp_path / sha[:2] / sha).write_bytes(b"x")
    (tmp_path / sha[:2] / f"{sha}#1").write_bytes(b"half")  # obstore's staging file
    (tmp_path / sha[:2] / ".tmp-old").write_bytes(b"half")  # the former writer's
    assert sweep_temp_files(tmp_path) == 2
    assert [p.name for p in (tmp_path / sha[:2]).iterdir()] == [sha]
