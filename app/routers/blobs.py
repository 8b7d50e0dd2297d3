"""GET /blobs/{sha256}: stored inputs and outputs, content-addressed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from app.deps import BlobsDep
from app.schemas.errors import error_responses

router = APIRouter(prefix="/blobs", tags=["blobs"])


@router.get("/{sha256}", response_class=FileResponse, summary="A stored file",
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}},
                             "description": "The file, with its content type and an ETag."},
                       304: {"description": "Not modified (If-None-Match matched)."},
                       **error_responses(_404="Unknown blob.")})
def get_blob(sha256: str, request: Request, blobs: BlobsDep) -> Response:
    row, path = blobs.get(sha256.lower())
    etag = f'"{row.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") in (etag, row.sha256, "*"):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=row.content_type, headers=headers)
