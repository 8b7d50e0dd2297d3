"""A corpus of bad input: every item gets a 4xx error envelope, nothing reaches a worker,
nothing is fetched, and the server keeps serving afterwards.

The corpus runs in one test per database (one app start each); a failure lists every
item that misbehaved. Behaviour pinned on purpose:

- a JPEG mask is accepted: masks without transparency use luminance (> 127 = change),
  and a JPEG has none, so it decodes and applies like a greyscale PNG;
- an http(s)/file URL as an image is a 422 ``invalid_image`` that says URLs are not
  accepted; no request leaves the server (a listening socket would see it);
- a PNG header that claims 50000x50000 is refused on its declared size (413) before a
  single pixel is decoded.
"""

from __future__ import annotations

import base64
import io
import socket
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from app.errors import PayloadTooLarge
from app.imaging.decode import ImageLimits, decode_image
from tests.utils.images import box_mask, data_url, decode, png_bytes, scene

SIZE, BOX = (64, 64), (16, 16, 47, 47)
FAST = {"prompt": "a mill", "steps": 2, "width": 64, "height": 64, "seed": 1}
TRAVERSALS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
              "..\\..\\windows\\win.ini"]


def b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` RGB, one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def listener():
    """A socket that records whether anything connected: URLs must never be fetched."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    hits: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                hits.append(conn.recv(1024))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join(2)
    server.close()


def corpus(port: int) -> list[tuple[str, str, dict, tuple[int, ...], str | None]]:
    """(name, endpoint, JSON body, accepted statuses, expected param or None)."""
    image, mask = data_url(scene(*SIZE)), data_url(box_mask(SIZE, BOX))
    good_png = png_bytes(scene(*SIZE))
    inpaint = {"prompt": "x", "image": image, "mask": mask, **{k: FAST[k] for k in
                                                               ("steps", "width", "height")}}
    seq = {"image": image, "prompt": "x", "frames": 2, "steps": 2, "width": 64, "height": 64}
    kiosk = {"prompt": "x", "image": image, "mask": mask}
    bad_images: dict[str, tuple[str, tuple[int, ...]]] = {
        "truncated png": (b64(good_png[: len(good_png) // 2]), (422,)),
        "png cut after the header": (b64(good_png[:33]), (422,)),
        "zero bytes": ("", (422,)),
        "empty data url": ("data:image/png;base64,", (422,)),
        "broken base64": ("data:image/png;base64,!!!not*base64", (422,)),
        "not base64 at all": ("%%%% ???", (422,)),
        "text, not an image": (b64(b"hello, I am not a picture"), (422,)),
        "1x1 image": (data_url(Image.new("RGB", (1, 1))), (422,)),
        "100000x1 image": (data_url(Image.new("L", (100000, 1))), (413,)),
        "decompression bomb 50000x50000": (b64(png_header_claiming(50000, 50000)), (413,)),
        "bomb under Pillow's own limit": (b64(png_header_claiming(9000, 9000)), (413,)),
        "http url": (f"http://127.0.0.1:{port}/cat.png", (422,)),
        "https url": (f"https://127.0.0.1:{port}/cat.png", (422,)),
        "file url": ("file:///etc/passwd", (422,)),
        "unknown blob sha": ("ab" * 32, (422,)),
        "svg": (b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), (422,)),
        **{f"path {p!r} as blob id": (p, (422,)) for p in TRAVERSALS},
    }
    items = []
    for name, (value, statuses) in bad_images.items():
        items += [
            (f"/inpaint image: {name}", "/inpaint", {**inpaint, "image": value}, statuses,
             "image"),
            (f"/inpaint mask: {name}", "/inpaint", {**inpaint, "mask": value}, statuses, "mask"),
            (f"/img2seq image: {name}", "/img2seq", {**seq, "image": value}, statuses, "image"),
            (f"/inpainting/ image: {name}", "/inpainting/", {**kiosk, "image": value},
             statuses, "image"),
        ]
    items += [
        ("mask of another size", "/inpaint",
         {**inpaint, "mask": data_url(box_mask((80, 64), BOX))}, (422,), "mask"),
        ("image as a number", "/inpaint", {**inpaint, "image": 12}, (422,), "image"),
        ("image as a list", "/inpaint", {**inpaint, "image": [image]}, (422,), "image"),
    ]
    for endpoint, body in (("/txt2img", FAST), ("/inpaint", inpaint)):
        items += [
            (f"{endpoint} huge prompt", endpoint, {**body, "prompt": "x" * 100_000}, (422,),
             "prompt"),
            (f"{endpoint} prompt over the limit", endpoint, {**body, "prompt": "y" * 2001},
             (422,), "prompt"),
            (f"{endpoint} huge negative prompt", endpoint,
             {**body, "negative_prompt": "x" * 100_000}, (422,), "negative_prompt"),
            (f"{endpoint} empty prompt", endpoint, {**body, "prompt": ""}, (422,), "prompt"),
            # param is None: the schemas' control-character check is a model validator
            (f"{endpoint} NUL in prompt", endpoint, {**body, "prompt": "a\u0000b"}, (422,),
             None),
            (f"{endpoint} unknown scheduler", endpoint, {**body, "scheduler": "nope"}, (422,),
             "scheduler"),
            (f"{endpoint} unknown model", endpoint, {**body, "model": "no-such-model"},
             (404, 422), "model"),
            (f"{endpoint} unknown lora", endpoint, {**body, "loras": [{"name": "nope"}]},
             (404, 422), "loras"),
            (f"{endpoint} unknown vae", endpoint, {**body, "vae": "nope"}, (404, 422), "vae"),
            (f"{endpoint} steps 0", endpoint, {**body, "steps": 0}, (422,), "steps"),
            (f"{endpoint} steps over the limit", endpoint, {**body, "steps": 151}, (422,),
             "steps"),
            (f"{endpoint} num_images 0", endpoint, {**body, "num_images": 0}, (422,),
             "num_images"),
            (f"{endpoint} seed too big", endpoint, {**body, "seed": 2**40}, (422,), "seed"),
            (f"{endpoint} unknown field", endpoint, {**body, "colour": "red"}, (422,), None),
        ]
        for dim in ("width", "height"):
            for value in (-8, 0, 65, 7, 100000, "wide", 64.5):
                items.append((f"{endpoint} {dim}={value!r}", endpoint, {**body, dim: value},
                              (413, 422), dim))
        for path in TRAVERSALS:
            items += [
                (f"{endpoint} model {path!r}", endpoint, {**body, "model": path}, (404, 422),
                 "model"),
                (f"{endpoint} lora {path!r}", endpoint, {**body, "loras": [{"name": path}]},
                 (404, 422), "loras"),
                (f"{endpoint} vae {path!r}", endpoint, {**body, "vae": path}, (404, 422),
                 "vae"),
            ]
    items += [
        ("/img2seq frames 0", "/img2seq", {**seq, "frames": 0}, (422,), "frames"),
        ("/img2seq frames over the limit", "/img2seq", {**seq, "frames": 121}, (422,),
         "frames"),
        ("/img2seq huge schedule prompt", "/img2seq",
         {**{k: v for k, v in seq.items() if k != "prompt"},
          "prompt_schedule": {"0": "x" * 5000}}, (422,), "prompt_schedule.0"),
        ("/img2seq schedule frame out of range", "/img2seq",
         {**{k: v for k, v in seq.items() if k != "prompt"}, "prompt_schedule": {"99": "x"}},
         (422,), None),
        ("/img2seq model traversal", "/img2seq", {**seq, "model": "../../etc/passwd"},
         (404, 422), "model"),
        ("/inpainting/ model 7", "/inpainting/", {**kiosk, "model": 7}, (422,), "model"),
        ("/inpainting/ huge prompt", "/inpainting/", {**kiosk, "prompt": "x" * 100_000},
         (422,), "prompt"),
        ("/prompt-expand huge idea", "/prompt-expand", {"idea": "x" * 100_000}, (422,),
         "idea"),
        ("/prompt-expand idea over the limit", "/prompt-expand", {"idea": "x" * 2001}, (422,),
         "idea"),
    ]
    return items


def check_envelope(response) -> str | None:
    """None if ``response`` is a 4xx with the one error envelope, else what is wrong."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"code", "message", "param"}:
        return f"not the envelope: {body}"
    if not (isinstance(error["code"], str) and isinstance(error["message"], str)):
        return f"bad envelope types: {body}"
    return None


def test_the_bad_input_corpus_gets_4xx_envelopes_and_the_server_keeps_serving(client,
                                                                               listener):
    port, hits = listener
    records_before = client.get("/records").json()["total"]
    problems = []
    for name, endpoint, body, statuses, param in corpus(port):
        r = client.post(endpoint, json=body)
        wrong = check_envelope(r)
        if wrong is None and r.status_code not in statuses:
            wrong = f"status {r.status_code}, expected {statuses}: {r.text[:200]}"
        if wrong is None and param is not None and not str(
                r.json()["error"]["param"] or "").startswith(param):
            wrong = f"param {r.json()['error']['param']!r}, expected {param!r}"
        if wrong:
            problems.append(f"{name}: {wrong}")
    assert not problems, "\n".join(problems)
    assert hits == [], "an image URL was fetched"
    # Nothing was queued: each refusal is recorded as rejected, never as a job.
    page = client.get("/records", params={"limit": 500}).json()
    new = page["items"][:page["total"] - records_before]
    assert new and {r["status"] for r in new} == {"rejected"}
    assert all(r["error_code"] and not r["outputs"] for r in new)
    assert client.get("/ready").status_code == 200
    r = client.post("/txt2img", json=FAST)
    assert r.status_code == 200 and r.json()["status"] == "succeeded"


def test_the_url_error_says_urls_are_not_accepted(client):
    r = client.post("/inpaint", json={"prompt": "x", "mask": data_url(box_mask(SIZE, BOX)),
                                      "image": "https://example.com/cat.png", **FAST})
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "invalid_image", "param": "image",
        "message": "image: image URLs are not accepted (nothing is fetched); send the image "
                   "itself as a data-URL, base64 or a multipart file, or the sha256 of a "
                   "stored blob"}


def test_bad_multipart_uploads_are_4xx_too(client):
    good = png_bytes(scene(*SIZE))
    mask = png_bytes(box_mask(SIZE, BOX))
    form = {"prompt": "x", "steps": "2", "width": "64", "height": "64"}
    for name, image in (("truncated", good[:100]), ("empty", b""), ("text", b"GIF89a junk"),
                        ("bomb", png_header_claiming(50000, 50000))):
        r = client.post("/inpaint", data=form, files={"image": ("i.png", image, "image/png"),
                                                      "mask": ("m.png", mask, "image/png")})
        assert check_envelope(r) is None, (name, r.status_code, r.text)
        r = client.post("/img2seq", data={"prompt": "x", "frames": "2", "steps": "2"},
                        files={"image": ("i.png", image, "image/png")})
        assert check_envelope(r) is None, (name, r.status_code, r.text)
    assert client.post("/txt2img", json=FAST).status_code == 200


def test_traversal_paths_on_the_read_routes_are_404_envelopes(client):
    for path in ("/blobs/..%2F..%2Fetc%2Fpasswd", "/blobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                 "/blobs/..", "/blobs/" + "a" * 64, "/blobs/etc-passwd",
                 "/records/..%2F..%2Fetc%2Fpasswd", "/jobs/..%2F..%2Fetc%2Fpasswd",
                 "/models/..%2F..%2Fetc%2Fpasswd"):
        r = client.get(path)
        assert r.status_code == 404 and check_envelope(r) is None, (path, r.text)


def test_a_jpeg_mask_is_accepted_by_luminance(client):
    """Chosen behaviour: a JPEG has no alpha, so it is a luminance mask like a greyscale
    PNG; JPEG's ringing around the edges stays under the 127 threshold."""
    buf = io.BytesIO()
    box_mask(SIZE, BOX).convert("RGB").save(buf, format="JPEG", quality=90)
    jpeg = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.post("/inpaint", json={"prompt": "x", "image": data_url(scene(*SIZE)),
                                      "mask": jpeg, "mask_blur": 0, **FAST})
    assert r.status_code == 200, r.text
    applied = np.asarray(decode(client.get(r.json()["mask_applied"]["url"]).content)) > 0
    expected = np.asarray(box_mask(SIZE, BOX)) > 0
    assert (applied != expected).sum() <= 8  # at most a few corner pixels differ


@pytest.mark.parametrize("width, height", [(50000, 50000), (9000, 9000), (3000, 3000)])
def test_the_size_guard_refuses_before_any_pixel_is_decoded(monkeypatch, width, height):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    limits = ImageLimits(max_pixels=2048 * 2048, max_side=2048)
    with pytest.raises(PayloadTooLarge) as raised:
        decode_image(png_header_claiming(width, height), "image", limits)
    assert raised.value.param == "image"
