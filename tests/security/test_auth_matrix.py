"""The auth matrix: every route of the app x every kind of caller -> 401, 403 or let in.

The routes come from the app itself, so a new route that is missing from ``POLICY`` fails
``test_every_route_has_a_policy`` until someone decides who may call it.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from tests.security.conftest import bearer, make_key

# (method, path) -> who may call it. "blob": read or generate (own blobs only).
POLICY: dict[tuple[str, str], str] = {
    ("POST", "/txt2img"): "generate",
    ("POST", "/inpaint"): "generate",
    ("POST", "/img2seq"): "generate",
    ("POST", "/img2img"): "generate",
    ("POST", "/upscale"): "generate",
    ("GET", "/upscalers"): "any",
    ("POST", "/inpainting/"): "generate",
    ("POST", "/prompt-expand"): "generate",
    ("GET", "/jobs/{job_id}"): "generate",
    ("GET", "/jobs/{job_id}/events"): "generate",
    ("GET", "/jobs/{job_id}/webhooks"): "generate",  # own jobs only (admin: any)
    ("GET", "/jobs/{job_id}/preview"): "generate",  # own jobs only (admin: any)
    ("DELETE", "/jobs/{job_id}"): "generate",
    ("GET", "/records"): "read",
    ("GET", "/records/{record_id}"): "read",
    ("POST", "/records/{record_id}/feedback"): "generate_or_read",  # own records (admin: any)
    ("GET", "/blobs/{sha256}"): "blob",
    ("GET", "/models"): "any",
    ("GET", "/models/{model_id:path}"): "any",
    ("GET", "/loras"): "any",
    ("GET", "/vaes"): "any",
    ("GET", "/schedulers"): "any",
    ("GET", "/providers"): "any",
    ("GET", "/styles"): "any",
    ("POST", "/models/refresh"): "admin",
    ("POST", "/models/merge"): "admin",
    ("POST", "/models/{model_id:path}/load"): "admin",
    ("POST", "/models/{model_id:path}/unload"): "admin",
    ("GET", "/health"): "public",
    ("GET", "/ready"): "public",
    ("GET", "/metrics"): "admin",  # or a keyless loopback caller (app/routers/metrics.py)
    ("GET", "/docs"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs-assets/*"): "public",
    # the kiosk's visitor page (app/routers/kiosk_page.py): static, 404 unless turned on
    **{("GET", p): "public" for p in ("/kiosk", "/kiosk/", "/kiosk/config.json",
                                       "/kiosk/map", "/kiosk/{name}")},
    # AUTOMATIC1111's API (app/compat/a1111/routes.py); its errors in A1111's shape
    **{("POST", f"/sdapi/v1/{p}"): "generate" for p in (
        "txt2img", "img2img", "extra-single-image", "interrupt", "skip", "options")},
    ("GET", "/sdapi/v1/progress"): "generate",
    **{("POST", f"/sdapi/v1/{p}"): "admin" for p in (
        "refresh-checkpoints", "refresh-vae", "refresh-loras")},
    ("POST", "/sdapi/v1/png-info"): "any",
    **{("GET", f"/sdapi/v1/{p}"): "any" for p in (
        "options", "samplers", "schedulers", "upscalers", "sd-models", "sd-vae", "loras",
        "prompt-styles", "scripts", "script-info", "embeddings", "hypernetworks",
        "face-restorers", "realesrgan-models", "latent-upscale-modes", "extensions")},
    # The OpenAI Images API (app/compat/openai_images/routes.py); errors in OpenAI's shape
    **{("POST", f"/v1/images/{p}"): "generate" for p in ("generations", "edits", "variations")},
    ("GET", "/v1/models"): "any",
    ("GET", "/v1/models/{model_id:path}"): "any",
}
CALLERS = ("remote-no-key", "invalid-key", "generate", "read", "admin")
ALLOWED = {  # policy -> the callers let in
    "public": set(CALLERS),
    "any": {"generate", "read", "admin"},
    "generate": {"generate", "admin"},
    "read": {"read", "admin"},
    "blob": {"generate", "read", "admin"},
    "generate_or_read": {"generate", "read", "admin"},
    "admin": {"admin"},
}
PARAMS = {"job_id": "00000000-0000-4000-8000-000000000000",
          "record_id": "00000000-0000-4000-8000-000000000000",
          "sha256": "0" * 64, "model_id": "no-such-model", "name": "kiosk.js"}


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route, those of included routers too."""
    found = set()
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            found.add(("GET", route.path + "/*"))
        else:
            found.update((m, route.path) for m in route.methods - {"HEAD"})
    return found


def concrete(path: str) -> str:
    if path == "/docs-assets/*":
        return "/docs-assets/swagger-ui.css"
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAMS[m.group(1)], path)


# Bodies that would start real work when empty (AUTOMATIC1111's defaults: 512 px, 50 steps)
SMALL_BODIES = {"/sdapi/v1/txt2img": {"steps": 1, "width": 64, "height": 64}}


def call(client, method: str, path: str, headers: dict[str, str]):
    # minimal: the handler may answer 422
    body = {"json": SMALL_BODIES.get(path, {})} if method == "POST" else {}
    return client.request(method, concrete(path), headers=headers, **body)


def test_every_route_has_a_policy(client):
    routes = app_routes(client.app)
    assert routes - set(POLICY) == set(), "routes without an entry in POLICY"
    assert set(POLICY) - routes == set(), "POLICY names routes the app does not have"
    spec = client.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert documented <= {(m, re.sub(r":\w+\}", "}", p)) for m, p in routes}


def test_the_matrix(client, remote):
    secrets = {scope: make_key(client, f"matrix-{scope}", scope)[1]
               for scope in ("generate", "read", "admin")}
    outside = remote(client)
    callers = {"remote-no-key": (outside, {}),
               "invalid-key": (outside, bearer("bw_" + "x" * 43)),
               **{scope: (outside, bearer(secret)) for scope, secret in secrets.items()}}
    failures = []
    for (method, path), policy in sorted(POLICY.items()):
        for caller in CALLERS:
            http, headers = callers[caller]
            r = call(http, method, path, headers)
            if caller in ALLOWED[policy]:
                ok = r.status_code not in (401, 403)
            elif path.startswith("/sdapi/"):  # AUTOMATIC1111's error body, Basic challenge
                ok = (r.status_code == 401 and r.headers.get("www-authenticate", "")
                      .startswith("Basic") and "API key" in r.json()["detail"]
                      ) if caller in ("remote-no-key", "invalid-key") else (
                    r.status_code == 403 and f"'{policy}'" in r.json()["detail"])
            elif path.startswith("/v1/"):  # OpenAI's error body
                error = r.json()["error"]
                ok = (r.status_code == 401 and error["code"] == "invalid_api_key"
                      and r.headers.get("www-authenticate") == "Bearer"
                      ) if caller in ("remote-no-key", "invalid-key") else (
                    r.status_code == 403 and f"'{policy}'" in error["message"])
            elif caller in ("remote-no-key", "invalid-key"):
                ok = (r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
                      and r.json()["error"]["code"] == "unauthorized")
            else:
                error = r.json()["error"]
                ok = r.status_code == 403 and error["code"] == "forbidden" and (
                    f"'{'read' if policy == 'blob' else policy}'" in error["message"])
            if not ok:
                failures.append(f"{method} {path} as {caller}: {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("how", ["bearer", "x-api-key"])
def test_a_real_generation_with_a_generate_key(client, remote, how):
    _, secret = make_key(client, "blender", "generate")
    headers = bearer(secret) if how == "bearer" else {"X-API-Key": secret}
    outside = remote(client)
    r = outside.post("/txt2img", headers=headers,
                     json={"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2,
                           "seed": 1})
    assert r.status_code == 200, r.text
    image = r.json()["images"][0]
    assert outside.get(image["url"], headers=headers).status_code == 200  # its own blob
    assert outside.get(f"/jobs/{r.json()['job_id']}", headers=headers).status_code == 200
    assert outside.get(f"/records/{r.json()['record_id']}",
                       headers=headers).status_code == 403  # no read scope
