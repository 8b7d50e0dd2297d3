"""Every field of an image route's JSON body works as a multipart form field too, and the
OpenAPI document lists each of them for multipart.

The forms were once written by hand and drifted from the request models: multipart
/inpaint lacked provider, loras, vae, clip_skip, style, translate and expand_prompt, and
/img2seq documented 4 fields. Now both come from the model (app/routers/_body.py); these
tests walk the model's fields, so a new field that a form drops, or that the document
leaves out, fails here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from app.config import Settings
from app.errors import InvalidInput
from app.main import create_app
from app.routers._body import parse_body
from app.schemas.generation import Img2ImgRequest, InpaintRequest
from app.schemas.sequences import Img2SeqRequest
from app.schemas.upscale import UpscaleRequest
from tests.conftest import wait_for_job
from tests.utils.images import box_mask, png_bytes, scene

# Images and pipelines: PostgreSQL would only repeat the record writes (tests/conftest.py).
RUN_ON_DATABASES = ("sqlite",)

ASYNC = {"Prefer": "respond-async"}
IMAGE = png_bytes(scene(64, 64, seed=4))
MASK = png_bytes(box_mask((64, 64), (8, 8, 40, 40)))

# Each route that takes multipart: its model and the files a form sends.
ROUTES: dict[str, tuple[type[BaseModel], dict[str, bytes]]] = {
    "/inpaint": (InpaintRequest, {"image": IMAGE, "mask": MASK}),
    "/img2img": (Img2ImgRequest, {"image": IMAGE}),
    "/upscale": (UpscaleRequest, {"image": IMAGE}),
    "/img2seq": (Img2SeqRequest, {"image": IMAGE}),
}
# Values valid only on this server (the tiny test models of tests/utils/models.py, their
# LoRAs and VAE, a shipped style, the local provider), values that keep each job small,
# and lists and objects. Every other field gets a value derived from its schema (below).
EXAMPLES = {
    "provider": "local",
    "loras": [{"name": "style-diffusers", "weight": 0.5}],
    "vae": "tiny-vae",
    "style": "satellite-map",
    "prompt": "ein Leuchtturm",  # German, so that translate=true shows on the record
    "prompt_schedule": {"0": "ein Leuchtturm", "1": "a harbour"},
    # (sizes other than the default: the model's native size, or the init image's 64x64)
    "steps": 4, "num_images": 2, "frames": 2, "width": 96, "height": 80, "seed": 77,
    "motion": {"zoom": 1.05, "rotate": [0, 2]},
    "packages": ["gif", "zip"],
    "webhook": {"url": "https://hooks.example/bildwerk", "events": ["completed"]},
}
# Fields whose sent value the record shows just as it shows the default (the default
# chain runs the local provider too): a value the server refuses shows that it is read.
INDISTINCT = {"provider": "no-such-provider"}
ROUTE_EXAMPLES = {
    "/inpaint": {"model": "tiny-sd15-inpaint", "strength": 0.75},
    "/img2img": {"model": "tiny-single", "strength": 0.5},
    "/upscale": {"upscaler": "Nearest"},
    # not the default model (tiny-sd15); steps x strength must be at least 1
    "/img2seq": {"model": "tiny-single", "strength": [0.5, 0.75]},
}


def _alternatives(prop: dict) -> list[dict]:
    return [a for a in prop.get("anyOf") or prop.get("oneOf") or [prop]
            if a.get("type") != "null"]


def _derived(name: str, prop: dict):
    """A valid value other than the default, from the field's JSON schema."""
    alternatives = _alternatives(prop)
    if len(alternatives) != 1:
        pytest.fail(f"add an example value for {name!r} to EXAMPLES")
    schema, default = alternatives[0], prop.get("default")
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != default)
    kind = schema.get("type")
    if kind == "boolean":
        return not default
    if kind in ("integer", "number"):
        value = (default or 0) + (1 if kind == "integer" else 0.5)
        assert value <= schema.get("maximum", value), f"add an example for {name!r}"
        return value
    if kind == "string":
        return f"{name} sent as a form field"
    pytest.fail(f"add an example value for {name!r} to EXAMPLES")


def sent_values(path: str) -> dict:
    """A valid, non-default value for every field of the route's model (files as bytes)."""
    model, files = ROUTES[path]
    properties = model.model_json_schema()["properties"]
    examples = {**EXAMPLES, **ROUTE_EXAMPLES[path]}
    return {name: files[name] if name in files else examples[name] if name in examples
            else _derived(name, properties[name]) for name in model.model_fields}


# Fields a route takes one group of at a time, where its schema has no oneOf saying so.
EXCLUSIVE = {"/upscale": [{"scale"}, {"width", "height"}]}


def variants(path: str) -> list[dict]:
    """The sent values split where the model takes one of several fields (img2seq:
    prompt or prompt_schedule; upscale: scale or width and height); together the variants
    send every field."""
    model = ROUTES[path][0]
    values = sent_values(path)
    choices = [set(c.get("required", ())) for c in model.model_json_schema().get("oneOf", [])
               ] or EXCLUSIVE.get(path, [])
    if not choices:
        return [values]
    every = set().union(*choices)
    out = [{k: v for k, v in values.items() if k not in every - chosen} for chosen in choices]
    assert set().union(*out) == set(values)
    return out


def form(values: dict, files: dict[str, bytes]) -> tuple[dict, dict]:
    """``values`` as multipart: files as file parts, lists of text as repeated fields,
    other lists and objects as JSON text, scalars as text."""
    data, parts = {}, {}
    for name, value in values.items():
        if name in files:
            parts[name] = (f"{name}.png", value, "image/png")
        elif isinstance(value, bool):
            data[name] = "true" if value else "false"
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            data[name] = value  # packages=gif&packages=zip
        elif isinstance(value, list | dict):
            data[name] = json.dumps(value)
        else:
            data[name] = str(value)
    return data, parts


def post_form(client: TestClient, path: str, values: dict, headers: dict | None = None):
    data, parts = form(values, ROUTES[path][1])
    return client.post(path, data=data, files=parts, headers=headers)


# -- the document ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec() -> dict:
    return create_app(Settings(_env_file=None)).openapi()


def test_every_multipart_route_is_covered_here(spec):
    multipart = {path for path, item in spec["paths"].items() for op in item.values()
                 if "multipart/form-data" in op.get("requestBody", {}).get("content", {})
                 # The compatibility routes follow OpenAI's and AUTOMATIC1111's forms, not
                 # our models (tests/compat covers them).
                 and not path.startswith(("/v1/", "/sdapi/"))}
    assert multipart == set(ROUTES)
    # The kiosk's legacy route keeps its JSON body only.
    kiosk = spec["paths"]["/inpainting/"]["post"]["requestBody"]["content"]
    assert set(kiosk) == {"application/json"}


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_the_multipart_schema_lists_exactly_the_models_fields(spec, path):
    model, files = ROUTES[path]
    content = spec["paths"][path]["post"]["requestBody"]["content"]
    json_schema = content["application/json"]["schema"]
    media = content["multipart/form-data"]
    schema = media["schema"]
    assert set(schema["properties"]) == set(model.model_fields) == set(json_schema["properties"])
    assert schema.get("required") == json_schema.get("required")
    assert schema.get("oneOf") == json_schema.get("oneOf")
    for name, prop in schema["properties"].items():
        if name in files:
            assert prop == {**prop, "type": "string", "format": "binary"}, name
            continue
        structured = [a for a in _alternatives(json_schema["properties"][name])
                      if a.get("type") in ("object", "array")]
        if structured:  # lists and objects: JSON text, documented as such
            assert "application/json" in media["encoding"][name]["contentType"], name
            assert "JSON text" in prop["description"], name
        else:
            assert name not in media.get("encoding", {}), name
            assert {a.get("type") for a in _alternatives(prop)} == {
                a.get("type") for a in _alternatives(json_schema["properties"][name])}, name


# -- the form reads into the model as the JSON body does ---------------------------------

@pytest.fixture(scope="module")
def echo() -> TestClient:
    """parse_body alone: the model a form becomes, as JSON."""
    app = FastAPI()
    app.state.settings = SimpleNamespace(max_json_depth=16, max_json_items=1024,
                                         max_json_values=20_000)

    def route(model):
        async def handler(request: Request):
            try:
                body = await parse_body(request, model)
            except InvalidInput as exc:
                return JSONResponse({"message": exc.message, "param": exc.param}, 422)
            return body.model_dump(mode="json")
        return handler

    for path, (model, _) in ROUTES.items():
        app.post(path)(route(model))
    return TestClient(app)


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_form_with_every_field_reads_as_the_json_body_does(echo, path):
    model, files = ROUTES[path]
    for values in variants(path):
        r = post_form(echo, path, values)
        assert r.status_code == 200, r.text
        as_json = {k: (v.decode("latin-1") if isinstance(v, bytes) else v)
                   for k, v in values.items()}
        expected = model.model_validate(as_json).model_dump(mode="json")
        got = r.json()
        for name in files:  # a file part arrives as the base64 a JSON body would carry
            assert got.pop(name) == _b64(values[name])
            expected.pop(name)
        assert got == expected
        defaults = model.model_construct().model_dump(mode="json")
        for name in set(values) - set(files):
            assert got[name] != defaults.get(name), f"{name} was dropped"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("fields, expected", [
    ([("packages", "gif")], ["gif"]),  # one plain value of a list
    ([("packages", "gif"), ("packages", "zip")], ["gif", "zip"]),  # repeated
    ([("packages", '["gif", "zip"]')], ["gif", "zip"]),  # JSON text
    ([("packages", '["gif"]'), ("packages", "zip")], ["gif", "zip"]),
])
def test_a_list_is_json_text_or_a_repeated_field(echo, fields, expected):
    data: dict = {"prompt": "x"}
    for key, value in fields:
        data[key] = [*data[key], value] if key in data else [value]
    r = echo.post("/img2seq", data=data, files={"image": ("i.png", IMAGE, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["packages"] == expected


def test_a_list_of_objects_takes_one_object_per_field(echo):
    loras = [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 1.0}]
    r = echo.post("/img2seq", data={"prompt": "x", "loras": [json.dumps(x) for x in loras]},
                  files={"image": ("i.png", IMAGE, "image/png")})
    assert r.status_code == 200 and r.json()["loras"] == loras, r.text
    r = echo.post("/img2seq", data={"prompt": "x", "loras": json.dumps(loras[0])},
                  files={"image": ("i.png", IMAGE, "image/png")})
    assert r.status_code == 200 and r.json()["loras"] == loras[:1], r.text


@pytest.mark.parametrize("data, param", [
    ({"prompt": ["a", "b"]}, "prompt"),  # a scalar given twice
    ({"prompt": "x", "motion": "{zoom: 2}"}, "motion"),  # not JSON where JSON is due
    ({"prompt": "x", "frames": "many"}, "frames"),
    ({"prompt": "x", "color_coherence": "maybe"}, "color_coherence"),
])
def test_a_bad_form_field_is_422_naming_it(echo, data, param):
    r = echo.post("/img2seq", data=data, files={"image": ("i.png", IMAGE, "image/png")})
    assert r.status_code == 422 and r.json()["param"] == param, r.text


def test_text_fields_are_never_read_as_json(echo):
    r = echo.post("/img2seq", data={"prompt": '["a", "b"]', "negative_prompt": "{x}"},
                  files={"image": ("i.png", IMAGE, "image/png")})
    assert r.status_code == 200, r.text
    assert (r.json()["prompt"], r.json()["negative_prompt"]) == ('["a", "b"]', "{x}")


# -- the routes: each sent value reaches the job and its record --------------------------

def recorded(record: dict, name: str):
    """Where GET /records/{id} shows a request field."""
    params = record["params"]
    prompting = params.get("prompting") or {}
    shown = {
        "image": lambda: record["input_image_sha256"],
        "mask": lambda: record["mask_sha256"],
        "seed": lambda: params["seeds"][0],
        "num_images": lambda: len(params["seeds"]),
        "strength": lambda: params["strengths"] if "strengths" in params else params["strength"],
        "translate": lambda: record["prompt_translated"] is not None,
        "expand_prompt": lambda: prompting.get("expander") is not None,
        "style": lambda: prompting.get("style"),
        "prompt_schedule": lambda: params["prompt_schedule"] and record["prompt"],
        "motion": lambda: params["motion"],
    }
    if name in shown:
        return shown[name]()
    for where in (record, params):
        if name in where:
            return where[name]
    pytest.fail(f"the record does not show {name!r}")


def reflects(name: str, sent, shown) -> bool:
    if isinstance(sent, bytes):
        return shown == hashlib.sha256(sent).hexdigest()
    if name == "prompt_schedule":
        return all(f"{frame}: {prompt}" in shown for frame, prompt in sent.items())
    if name == "motion":
        return isinstance(shown, dict) and all(shown[k] == v for k, v in sent.items())
    if name == "negative_prompt":
        return sent in shown
    return shown == sent


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_field_sent_as_a_form_field_reaches_the_record(client, path):
    model, files = ROUTES[path]
    jobs = []

    def submit(values: dict) -> dict:
        r = post_form(client, path, values, headers=ASYNC)
        assert r.status_code == 202, r.text
        jobs.append(r.json()["job_id"])
        record = client.get(f"/records/{r.json()['record_id']}").json()
        client.delete(f"/jobs/{jobs[-1]}")  # only the request matters here
        return record

    try:
        for values in variants(path):
            # A webhook is not on the record (its deliveries are: tests/webhooks); that a
            # form's webhook is read shows below, where a private target is refused.
            values = {k: v for k, v in values.items() if k != "webhook"}
            record = submit(values)
            for name, sent in values.items():
                assert reflects(name, sent, recorded(record, name)), (
                    name, sent, recorded(record, name))
            # The same fields left out show otherwise, so each check above can fail.
            required = {k for k in values if model.model_fields[k].is_required()} | (
                {"prompt", "prompt_schedule"} & set(values))
            baseline = submit({k: v for k, v in values.items() if k in required})
            for name in set(values) - required - set(INDISTINCT):
                assert not reflects(name, values[name], recorded(baseline, name)), name
        base = {k: v for k, v in variants(path)[0].items() if k != "webhook"}
        for name, refused in INDISTINCT.items():  # read, since a bad value is refused
            r = post_form(client, path, {**base, name: refused}, headers=ASYNC)
            assert r.status_code == 422 and r.json()["error"]["param"] == name, r.text
        r = post_form(client, path, {**base, "webhook": {"url": "http://10.0.0.1/hook"}},
                      headers=ASYNC)
        assert r.status_code == 422 and r.json()["error"]["param"] == "webhook.url", r.text
    finally:
        for job_id in jobs:
            wait_for_job(client, job_id)
