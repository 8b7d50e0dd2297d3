"""Property-based API tests: Schemathesis generates requests from /openapi.json and checks
that no request makes a 5xx and that every response matches what the document promises
(status code, content type, body schema, documented headers).

Bounded for CI (about two and a half minutes on one core, the operations spread over the
xdist workers): a few examples per operation, no deadline, derandomized so every run sends
the same requests, and generated work capped so a body never runs a 2048x2048, 150-step
job on the CPU (see ``_cap``).
The app is the one ``create_app`` builds, served in-process over ASGI, on SQLite, with a
copy of the tiny test models whose SD1.5 models are native 64 px (see ``_native_64px``).

One database is enough here: what is checked is the HTTP contract (status codes, content
types, bodies, headers), which the database does not change; the repository code is
tested on both SQLite and PostgreSQL by every HTTP test that uses ``make_client``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as st_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_DEVICE

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MAX_EXAMPLES = 20

# Upper bounds for generated work, by field name, on every operation's body (the native
# routes and the OpenAI and AUTOMATIC1111 ones). A capped value stays valid: values outside
# the schema's range (negative tests) are left as they are, and a size that is no multiple
# of 8 stays one (capped to 64 + its remainder), so the server still sees them. 64 is
# the smallest size the schemas allow and the tiny models' native size here.
_SIZE_CAP = 64
_SIZES = {"width", "height", "upscaling_resize_w", "upscaling_resize_h"}
_CAPS = {"steps": 2, "num_images": 2, "n": 2, "batch_size": 2, "n_iter": 1, "frames": 2,
         **dict.fromkeys(_SIZES, _SIZE_CAP)}
_FACTOR_CAPS = {"scale": 2.0, "upscaling_resize": 2.0}  # upscale factors
_SIZE_STRING = re.compile(r"\s*(\d{1,5})\s*x\s*(\d{1,5})\s*", re.IGNORECASE)  # OpenAI "WxH"
_MAX_SIDE = 4096  # a larger side in a size string is refused anyway: left as it is
# Filled in where a body that has the field leaves it out: steps (a generation's default is
# 25 to 50), and any field whose documented default is above its cap (img2seq's 8 frames,
# AUTOMATIC1111's 512x512), so the defaults do not run on every case. A size left out of
# a native route means the model's native resolution, which is small here (_native_64px).
_FILL_STEPS = 2
_FILL_SIZE = 64
_FILL_SIZE_PATHS = {"/txt2img", "/inpaint"}  # and these get 64x64 when they leave it out
_MAX_FRAMES_WITH_KEYFRAMES = 8


def _native_64px(models: Path) -> None:
    """Make the tiny SD1.5 models (native 256 px, like the embedded one) native 64 px in
    this copy, by their configs (the weights do not depend on it). Only work left to the
    model's resolution changes: the kiosk's POST /inpainting/ and ``inpaint_area=masked``
    generate a crop at the native size with 25 steps (~3 s a case at 256 px on one core),
    and so would every generation body that leaves its size out."""
    for folder in [*models.glob("tiny-sd15*"), models / "tiny-single.config"]:
        for part, size in (("unet", 8), ("vae", 64)):
            config = folder / part / "config.json"
            if config.is_file():
                data = json.loads(config.read_text())
                data["sample_size"] = size
                config.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def bildwerk_app(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                 embedded_template: Path):
    root = tmp_path_factory.mktemp("schemathesis")
    # A copy of the tiny test models, because POST /models/merge may write into the
    # models dir and the session's models dir is shared with every other test.
    # Left out: "broken" (weights that cannot load by design: loading it is the
    # documented 500 model_load_failed, which not_a_server_error would report).
    models = root / "models"
    shutil.copytree(models_dir, models, ignore=shutil.ignore_patterns("broken"))
    _native_64px(models)
    data_dir = root / "data"
    shutil.copytree(embedded_template, data_dir / "embedded" / "bildwerk-tiny")
    app = create_app(Settings(
        _env_file=None, data_dir=data_dir, models_dir=models,
        database_url=f"sqlite:///{root / 'bildwerk.db'}", device=TEST_DEVICE,
        default_model="tiny-sd15", embedded_model_id="bildwerk-tiny"))
    yield app
    # Schemathesis starts the app's lifespan on first use and keeps it for the process;
    # stop it here so the worker threads and the database end with this module.
    st_asgi.shutdown_lifespans()


# The document is the same for any settings, so it is read once at import (create_app
# does no work before its lifespan starts); the requests go to ``bildwerk_app``.
# (schemathesis.pytest.from_fixture would load it from the fixture, but schemathesis
# 4.32 reads pytest's private Node._nodeid there, which pytest 9 no longer has.)
schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None)).openapi()
).exclude(
    # An SSE stream of a live job stays open until the job ends; for the unknown job ids
    # generated here it is a 404, which GET /jobs/{job_id} already covers. Its stream is
    # tested in tests/routers/test_jobs.py.
    path="/jobs/{job_id}/events",
)


def _body_fields(document: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """(METHOD, path) -> {field: its schema} of each operation's request body, over all its
    content types (for an ``anyOf``, the branch with a type other than null)."""
    components = document.get("components", {}).get("schemas", {})

    def resolve(node: dict) -> dict:
        while isinstance(node, dict) and "$ref" in node:
            node = components.get(node["$ref"].rsplit("/", 1)[-1], {})
        return node if isinstance(node, dict) else {}

    fields: dict[tuple[str, str], dict[str, dict]] = {}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            found = fields.setdefault((method.upper(), path), {})
            for media in operation.get("requestBody", {}).get("content", {}).values():
                for name, field in resolve(media.get("schema", {})).get("properties", {}).items():
                    field = resolve(field)
                    branches = [resolve(b) for b in field.get("anyOf", [])]
                    typed = [b for b in branches if b.get("type") not in (None, "null")]
                    found.setdefault(name, {**field, **(typed[0] if typed else {})})
    return fields


def _within(field: dict, value) -> bool:
    """Whether ``value`` is inside the field's documented range (a negative test is not)."""

    def bound(name: str):
        limit = field.get(name)
        return limit if isinstance(limit, int | float) and not isinstance(limit, bool) else None

    low, high = bound("minimum"), bound("maximum")
    above, below = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    return ((low is None or value >= low) and (high is None or value <= high)
            and (above is None or value > above) and (below is None or value < below))


def _cap_int(key: str, value: int, field: dict) -> int:
    cap = _CAPS[key]
    if value <= cap or not _within(field, value):
        return value
    return cap + value % 8 if key in _SIZES else cap


def _cap_size_string(value: str) -> str:
    match = _SIZE_STRING.fullmatch(value)
    if not match or max(int(match[1]), int(match[2])) > _MAX_SIDE:
        return value
    width, height = (_cap_int("width", int(side), {}) for side in match.groups())
    return f"{width}x{height}"


def _cap_value(key: str, value, field: dict):
    if isinstance(value, bool):
        return value
    if key in _CAPS and isinstance(value, int):
        return _cap_int(key, value, field)
    if key in _CAPS and isinstance(value, str) and value.isdigit():  # a multipart field
        return str(_cap_int(key, int(value), field))
    if key in _FACTOR_CAPS and isinstance(value, int | float) and _within(field, value):
        return min(value, _FACTOR_CAPS[key]) if value > 0 else value
    if key == "size" and isinstance(value, str):
        return _cap_size_string(value)
    return value


def _last_keyframe(body: dict) -> int:
    """The largest keyframe an img2seq body schedules (prompt, strength or motion)."""
    schedules = [body.get("prompt_schedule"), body.get("strength")]
    if isinstance(body.get("motion"), dict):
        schedules += list(body["motion"].values())
    keys = [int(k) for sched in schedules if isinstance(sched, dict) for k in sched
            if isinstance(k, str) and k.isdigit()]
    return max(keys, default=0)


def _fill(path: str, fields: dict[str, dict]) -> dict:
    """What a body that leaves them out gets instead of big defaults (see above)."""
    fill = {"steps": _FILL_STEPS} if "steps" in fields else {}
    if path in _FILL_SIZE_PATHS:
        fill |= {"width": _FILL_SIZE, "height": _FILL_SIZE}
    for key, field in fields.items():
        default = field.get("default")
        if (key in _CAPS and isinstance(default, int) and not isinstance(default, bool)
                and default > _CAPS[key]):
            fill[key] = _FILL_SIZE if key in _SIZES else _CAPS[key]
    return fill


def _cap(method: str, path: str, body):
    """A body (JSON or multipart fields) with its work capped (see above)."""
    if not isinstance(body, dict):
        return body
    # A generated webhook URL would be resolved (DNS) and, were it public, called: the
    # webhook checks have their own tests (tests/webhooks), so bodies here carry none.
    body = {key: value for key, value in body.items() if key != "webhook"}
    fields = _FIELDS.get((method.upper(), path), {})
    capped = {**_fill(path, fields), **{key: _cap_value(key, value, fields.get(key, {}))
                                  for key, value in body.items()}}
    frames = body.get("frames", fields.get("frames", {}).get("default"))
    if "prompt_schedule" in fields and isinstance(frames, int) and "frames" in capped \
            and _within(fields["frames"], frames):
        # img2seq: keep the keyframes inside the sequence, so a valid body stays valid.
        wanted = min(_last_keyframe(body) + 1, _MAX_FRAMES_WITH_KEYFRAMES)
        capped["frames"] = min(frames, max(_CAPS["frames"], wanted))
    return capped


_FIELDS = _body_fields(schema.raw_schema)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, bildwerk_app):
    case.body = _cap(case.operation.method, case.operation.path, case.body)
    case.call_and_validate(app=bildwerk_app, checks=CHECKS)


def test_every_ref_in_the_document_resolves():
    """A hand-written request body (openapi_extra) once pointed at a component FastAPI
    never added (#/components/schemas/Motion): Swagger UI could not show it and
    Schemathesis silently generated no valid /img2seq JSON body at all."""
    document = schema.raw_schema

    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for ref in set(refs(document)):
        assert ref.startswith("#/"), ref
        target = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict) and part in target, f"dangling $ref {ref}"
            target = target[part]
