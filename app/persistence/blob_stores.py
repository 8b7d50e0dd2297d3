"""Where blob bytes live: a local folder or an S3-compatible bucket, both through obstore.

``BILDWERK_BLOB_STORE`` names the store:

- unset: the folder ``<data_dir>/blobs`` (as before);
- ``file:///abs/path``: another local folder;
- ``s3://bucket/prefix``: a bucket of AWS S3 or an S3-compatible server (MinIO, R2, ...),
  at ``BILDWERK_S3_ENDPOINT_URL`` when that is set, with the credentials and region of
  the standard ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``.

Every store has the same layout: the blob with hash ``sha`` is the object (or file)
``<sha[:2]>/<sha>`` below the folder or prefix, so an existing folder is used as it is.
Objects are written create-only (``If-None-Match: *`` on S3): an object that already
exists holds the same bytes (content addressing), so a writer that loses a race has
nothing left to do. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, NotSupportedError
from obstore.store import LocalStore, S3Store

from app.errors import BildwerkError

if TYPE_CHECKING:
    from app.config import Settings

_KEY = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{64})$")


class BlobStoreUnusable(BildwerkError):
    """The configured blob store cannot be used (bad URL, bucket unreachable, credentials
    refused): raised at startup and by ``bildwerk blobs`` commands, never answered."""

    code = "blob_store_unusable"


@dataclass(frozen=True)
class BlobLocation:
    """A parsed ``BILDWERK_BLOB_STORE``. ``url`` is safe to print (it holds no secret)."""

    url: str
    local_root: Path | None = None  # a file store's folder
    bucket: str | None = None  # an s3 store's bucket and prefix
    prefix: str = ""
    endpoint_url: str | None = field(default=None, compare=False)

    @property
    def is_local(self) -> bool:
        return self.local_root is not None

    def describe(self) -> str:
        """The store for a message: its URL, and the endpoint of an S3-compatible one."""
        if self.endpoint_url and not self.is_local:
            return f"{self.url} (endpoint {self.endpoint_url})"
        return self.url


def folder_location(root: Path) -> BlobLocation:
    root = Path(root).absolute()
    return BlobLocation(url=root.as_uri(), local_root=root)


def parse_location(url: str, endpoint_url: str | None = None) -> BlobLocation:
    """``file:///abs/path`` or ``s3://bucket/prefix``; a plain absolute path counts as a
    folder too."""
    if url.startswith("/"):
        return folder_location(Path(url))
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise BlobStoreUnusable(f"blob store {url!r}: a file store is file:///abs/path")
        return folder_location(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
            raise BlobStoreUnusable(f"blob store {url!r}: an S3 store is s3://bucket/prefix")
        prefix = parts.path.strip("/")
        shown = f"s3://{parts.netloc}/{prefix}" if prefix else f"s3://{parts.netloc}"
        return BlobLocation(url=shown, bucket=parts.netloc, prefix=prefix,
                            endpoint_url=endpoint_url or None)
    raise BlobStoreUnusable(f"blob store {url!r}: not file:///abs/path or s3://bucket/prefix")


def settings_location(settings: Settings) -> BlobLocation:
    """The store the settings name (``blob_store``, default ``<data_dir>/blobs``)."""
    if not settings.blob_store:
        return folder_location(settings.blobs_dir)
    return parse_location(settings.blob_store, settings.s3_endpoint_url)


def local_blobs_root(settings: Settings) -> Path | None:
    """The folder of a file store (``settings.blobs_dir`` as given, by default); None for
    a bucket."""
    if not settings.blob_store:
        return settings.blobs_dir
    return settings_location(settings).local_root


def key_for(sha256: str) -> str:
    sha256 = sha256.lower()
    return f"{sha256[:2]}/{sha256}"


def sha_of_key(key: str) -> str | None:
    """The hash a key (``ab/ab…``) stores; None for anything else (temp files, foreign
    objects, a shard that does not match)."""
    m = _KEY.fullmatch(key)
    return m.group(2) if m and m.group(2).startswith(m.group(1)) else None


# -- opening ---------------------------------------------------------------------------
def open_store(location: BlobLocation, *, probing: bool = False) -> Any:
    """The obstore store of ``location``. ``probing``: no retries and short timeouts, for a
    reachability check that must fail fast."""
    if location.local_root is not None:
        location.local_root.mkdir(parents=True, exist_ok=True)
        return LocalStore(location.local_root)
    endpoint = location.endpoint_url
    client_options: dict[str, Any] = {"connect_timeout": "5s" if probing else "10s",
                                      "timeout": "15s" if probing else "120s"}
    if endpoint and endpoint.startswith("http://"):
        client_options["allow_http"] = True
    retry = ({"max_retries": 0, "retry_timeout": timedelta(seconds=15),
              "backoff": {"init_backoff": timedelta(milliseconds=100),
                          "max_backoff": timedelta(seconds=1), "base": 2}}
             if probing else
             {"max_retries": 5, "retry_timeout": timedelta(seconds=60),
              "backoff": {"init_backoff": timedelta(milliseconds=100),
                          "max_backoff": timedelta(seconds=5), "base": 2}})
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["endpoint"] = endpoint
    try:
        # credentials and region: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, ...
        return S3Store(location.bucket, prefix=location.prefix or None,
                       client_options=client_options, retry_config=retry, **kwargs)
    except Exception as exc:  # a bad option: the message names no secret
        raise BlobStoreUnusable(
            f"blob store {location.describe()}: cannot be configured: {_first_line(exc)}"
        ) from exc


def check_reachable(location: BlobLocation) -> None:
    """List one object, so an unreachable endpoint, a missing bucket or refused credentials
    stop the start with the store's URL in the message (never a secret)."""
    if location.local_root is not None:
        try:
            location.local_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreUnusable(f"blob store {location.url}: {exc}") from exc
        return
    store = open_store(location, probing=True)
    try:
        next(iter(obstore.list(store, chunk_size=1)), None)
    except Exception as exc:
        raise BlobStoreUnusable(
            f"the blob store {location.describe()} is not usable: {_why(exc)}. Check "
            "BILDWERK_BLOB_STORE, BILDWERK_S3_ENDPOINT_URL, the bucket, and the credentials "
            "in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_REGION)") from exc


def _why(exc: Exception) -> str:
    text = str(exc)
    for marker, why in (("NoSuchBucket", "the bucket does not exist"),
                        ("InvalidAccessKeyId", "the access key is not known"),
                        ("SignatureDoesNotMatch", "the secret key does not match"),
                        ("AccessDenied", "access denied"),
                        ("403 Forbidden", "access denied (403)"),
                        ("error sending request", "the endpoint cannot be reached"),
                        ("404 Not Found", "not found (404; the bucket may not exist)")):
        if marker in text:
            return why
    return _first_line(exc)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# -- writing ---------------------------------------------------------------------------
def put_create(store: Any, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` unless an object is there already (then it holds the same
    content). True when this call wrote it. Stores without conditional puts get a plain
    put, which rewrites the same bytes."""
    for attempt in range(3):
        try:
            obstore.put(store, key, data, mode="create")
            return True
        except AlreadyExistsError:
            return False
        except NotSupportedError:
            obstore.put(store, key, data, mode="overwrite")
            return True
        except Exception:
            # e.g. S3's 409 while a concurrent conditional write of the same key is in
            # flight: done once the other writer's object is there
            if _has(store, key, len(data)):
                return False
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
    return False  # pragma: no cover


def _has(store: Any, key: str, size: int) -> bool:
    try:
        return obstore.head(store, key)["size"] == size
    except Exception:
        return False


def list_shas(store: Any) -> Iterator[str]:
    """The hashes of the blobs a store holds (anything else is ignored)."""
    for chunk in obstore.list(store, chunk_size=1000):
        for meta in chunk:
            sha = sha_of_key(meta["path"])
            if sha is not None:
                yield sha


# -- migration --------------------------------------------------------------------------
@dataclass
class MigrationReport:
    copied: int = 0
    skipped: int = 0  # already in the target
    failed: list[str] = field(default_factory=list)  # "sha: why"

    @property
    def total(self) -> int:
        return self.copied + self.skipped + len(self.failed)


def migrate(source: BlobLocation, target: BlobLocation, *, workers: int = 8,
            progress: Callable[[MigrationReport], None] | None = None) -> MigrationReport:
    """Copy every blob of ``source`` that ``target`` lacks, create-only, each verified by
    reading it back from the target and hashing it. Resumable: run it again after a
    failure or an interruption and it copies only what is still missing."""
    if source.describe() == target.describe():
        raise BlobStoreUnusable(f"the source and the target are the same store ({source.url})")
    check_reachable(source)
    check_reachable(target)
    src, dst = open_store(source), open_store(target)
    present = set(list_shas(dst))
    report, lock = MigrationReport(), threading.Lock()

    def copy(sha: str) -> None:
        try:
            data = bytes(obstore.get(src, key_for(sha)).bytes())
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError("the source's content does not match its hash")
            wrote = put_create(dst, key_for(sha), data)
            back = bytes(obstore.get(dst, key_for(sha)).bytes())
            if hashlib.sha256(back).hexdigest() != sha:
                raise ValueError("the copy in the target does not match its hash")
            outcome = "copied" if wrote else "skipped"
        except Exception as exc:
            outcome = f"{sha}: {_first_line(exc)}"
        with lock:
            if outcome == "copied":
                report.copied += 1
            elif outcome == "skipped":
                report.skipped += 1
            else:
                report.failed.append(outcome)
            if progress is not None and report.total % 100 == 0:
                progress(report)

    todo = []
    for sha in list_shas(src):
        if sha in present:
            report.skipped += 1
        else:
            todo.append(sha)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(copy, todo))
    return report
