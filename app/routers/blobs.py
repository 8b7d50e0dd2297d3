"""GET /blobs/{sha256}: stored inputs and outputs, content-addressed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from app.deps import BlobsDep, RecordsDep
from app.errors import NotFound
from app.schemas.errors import error_responses
from app.security.auth import PrincipalDep

router = APIRouter(prefix="/blobs", tags=["blobs"])


@router.get("/{sha256}", response_class=FileResponse, summary="A stored file",
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}},
                             "description": "The file, with its content type and an ETag."},
                       304: {"description": "Not modified (If-None-Match matched)."},
                       **error_responses(_404="Unknown blob.")})
def get_blob(sha256: str, request: Request, blobs: BlobsDep, records: RecordsDep,
             principal: PrincipalDep) -> Response:
    """A key without `admin` gets only the blobs its own records name (a running sequence
    records each frame before announcing it); any other is a 404, like an unknown one.
    A blob in a bucket is streamed from it (an If-None-Match that matches is answered
    304 without reading the bucket: the content of a hash never changes)."""
    sha256 = sha256.lower()
    owner = principal.owner
    if owner is not None and not records.blob_belongs_to(sha256, owner):
        raise NotFound(f"blob {sha256} not found", param="sha256")
    if blobs.root is not None:
        row, path = blobs.get(sha256)
    else:
        row, path = blobs.row(sha256), None
    etag = f'"{row.sha256}"'
    # A blob fetched with a key is that key's: shared caches must not hand it to others.
    cache = "private" if principal.key_id else "public"
    headers = {"ETag": etag, "Cache-Control": f"{cache}, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") in (etag, row.sha256, "*"):
        return Response(status_code=304, headers=headers)
    if path is not None:
        return FileResponse(path, media_type=row.content_type, headers=headers)
    opened = blobs.open(row.sha256)
    return StreamingResponse(opened.chunks(), media_type=row.content_type,
                             headers={**headers, "Content-Length": str(opened.size)})
