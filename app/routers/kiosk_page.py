"""The museum kiosk's visitor page (``clients/kiosk/``), served at ``/kiosk/``.

Only while ``BILDWERK_KIOSK_PAGE`` is on; otherwise every route here answers 404 in the
error envelope, as an unknown path does. The routes are public (a static page, no API
key) and left out of the OpenAPI schema. The page itself calls the API from the same
origin: ``POST /inpaint``, ``GET /jobs/{id}/events``, ``DELETE /jobs/{id}``, ``/blobs``.

- ``GET /kiosk/``: the page (``index.html``)
- ``GET /kiosk/config.json``: what the page needs to know (map URL, idle seconds, ...)
- ``GET /kiosk/map``: the map to paint on (``BILDWERK_KIOSK_MAP``, else the sample map)
- ``GET /kiosk/{file}``: the page's scripts, styles and images (one flat folder)

The files are read from ``clients/kiosk/`` in the source tree (next to ``app/``), else
from ``clients/kiosk/`` under the working directory (an installed wheel does not carry
them; see docs/kiosk.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from app.config import Settings
from app.deps import SettingsDep
from app.errors import NotFound

SOURCE_DIR = Path(__file__).resolve().parents[2] / "clients" / "kiosk"
SAMPLE_MAP = "sample-map.png"
JOB_TIMEOUT_S = 300.0  # the page gives up on a job after this long (and offers a retry)

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".webp": "image/webp", ".svg": "image/svg+xml",
}
_ASSET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:html|js|css|png|svg|webp)$")
# The page loads nothing from elsewhere; data: and blob: for the images it makes itself.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'self'; "
        "base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/kiosk", tags=["kiosk page"], include_in_schema=False)


def page_dir() -> Path:
    """``clients/kiosk`` beside ``app/`` (a checkout, an editable install), else under the
    working directory (a wheel installed next to a copy of the folder)."""
    for folder in (SOURCE_DIR, Path.cwd() / "clients" / "kiosk"):
        if (folder / "index.html").is_file():
            return folder
    return SOURCE_DIR


def _enabled(settings: Settings) -> Path:
    if not settings.kiosk_page:
        raise NotFound("Not Found")  # as an unknown path: the page is off
    folder = page_dir()
    if not (folder / "index.html").is_file():
        raise NotFound(f"the kiosk page files are missing ({folder}); they are served from "
                       "the source tree, see docs/kiosk.md")
    return folder


def _file(path: Path) -> FileResponse:
    media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media, headers=_PAGE_HEADERS)


def map_path(settings: Settings) -> Path:
    """The map the page shows: ``BILDWERK_KIOSK_MAP`` or the shipped sample map."""
    return Path(settings.kiosk_map) if settings.kiosk_map else page_dir() / SAMPLE_MAP


@router.get("")
def kiosk_redirect(request: Request, settings: SettingsDep) -> RedirectResponse:
    _enabled(settings)
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/kiosk/{query}", status_code=307)


@router.get("/")
def kiosk_index(settings: SettingsDep) -> FileResponse:
    return _file(_enabled(settings) / "index.html")


@router.get("/config.json")
def kiosk_config(settings: SettingsDep) -> JSONResponse:
    _enabled(settings)
    return JSONResponse({
        "map_url": "map",
        "idle_s": settings.kiosk_idle_s,
        "language": "de",
        "languages": ["de", "en"],
        "timeout_s": JOB_TIMEOUT_S,
        # the wish goes as it is typed; the server translates it (and, when the operator
        # set these for the kiosk, expands and styles it)
        "translate": True,
        "expand_prompt": settings.kiosk_expand,
        "style": settings.kiosk_style,
    }, headers={"Cache-Control": "no-store"})


@router.get("/map")
def kiosk_map(settings: SettingsDep) -> FileResponse:
    _enabled(settings)
    path = map_path(settings)
    if not path.is_file():
        raise NotFound(f"the kiosk map {path} does not exist (BILDWERK_KIOSK_MAP)")
    response = _file(path)
    response.headers["Cache-Control"] = "no-cache"  # revalidated: the operator may swap it
    return response


@router.get("/{name}")
def kiosk_asset(name: str, settings: SettingsDep) -> FileResponse:
    path = _enabled(settings) / name
    if not _ASSET.match(name) or not path.is_file():
        raise NotFound(f"/kiosk/{name} not found")
    return _file(path)
