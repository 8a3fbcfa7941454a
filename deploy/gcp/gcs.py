"""Google Cloud Storage reads: ``gs://bucket/object`` image URLs and model checkpoints.

google-cloud-storage is imported only inside these functions (the optional ``[gcp]``
extra). Credentials come from Application Default Credentials. When
``STORAGE_EMULATOR_HOST`` is set (an emulator or the test fake), the client talks to it
with anonymous credentials and a placeholder project, so no real credentials are needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

from deploy.uris import split_bucket_uri
from runners.errors import CheckpointError, DependencyMissing, PayloadTooLarge, URLFetchFailed
from runners.progress import Progress

logger = logging.getLogger(__name__)

FIELD = "image_url"
_INSTALL = "pip install 'segment-anywhere[gcp]'"
_CHECKPOINT_FIX = "check the path and the Google Cloud credentials, or set SEGANY_MODEL=tiny to run offline"
_FLUSH_BYTES = 1024 * 1024  # report progress per MiB, not per 8 KiB network read


def parse_uri(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/object`` into (bucket, object name); ValueError when either is empty."""
    return split_bucket_uri(uri, "gs", "object")


def _storage() -> Any:
    try:
        from google.cloud import storage
    except ImportError:
        raise DependencyMissing(f"gs:// URIs need google-cloud-storage; run `{_INSTALL}`.", status=501) from None
    return storage


def _client() -> Any:
    storage = _storage()
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # Recent releases do this by themselves; older ones (2.x) still ask for credentials.
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "segany-emulator"
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))


def _errors() -> tuple[type[BaseException], ...]:
    """The exception classes the client raises for network, HTTP and auth failures."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    import requests

    found: list[type[BaseException]] = [
        api_exceptions.GoogleAPIError,
        auth_exceptions.GoogleAuthError,
        requests.exceptions.RequestException,
    ]
    try:
        from google.cloud.storage import exceptions as storage_exceptions

        found += [storage_exceptions.InvalidResponse, storage_exceptions.DataCorruption]
    except (ImportError, AttributeError):  # google-cloud-storage 2.x: google-resumable-media
        from google.resumable_media import common

        found += [common.InvalidResponse, common.DataCorruption]
    return tuple(found)


def _describe(exc: BaseException, uri: str) -> str:
    """What went wrong, in words."""
    code = getattr(exc, "code", None)
    name = type(exc).__name__
    if code == 404 or name == "NotFound":
        return f"{uri} does not exist (no such bucket or object)"
    if code in (401, 403) or name in ("Forbidden", "Unauthorized"):
        return f"access to {uri} was denied (the server's identity needs storage.objects.get on it)"
    if name == "DefaultCredentialsError":
        return f"reading {uri} needs Google Cloud credentials and the server has none configured"
    if code == 412:
        return f"{uri} changed while it was being read"
    text = str(exc)
    return f"reading {uri} failed: {text if len(text) < 300 else text[:297] + '...'}"


def _retry(timeout_s: float) -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    with_timeout = getattr(DEFAULT_RETRY, "with_timeout", None) or DEFAULT_RETRY.with_deadline
    return with_timeout(timeout_s)


def read_object(uri: str, *, max_bytes: int, timeout_s: float) -> bytes:
    """Read a whole object for ``image_url``.

    uri: ``gs://bucket/object``. max_bytes: size cap, checked on the metadata first.
    timeout_s: connect/read timeout and the retry budget of each call.
    Raises PayloadTooLarge, URLFetchFailed or DependencyMissing.
    """
    try:
        bucket_name, name = parse_uri(uri)
    except ValueError as exc:
        raise URLFetchFailed(str(exc), field=FIELD) from None
    client = _client()
    try:
        blob = client.bucket(bucket_name).get_blob(name, timeout=timeout_s, retry=_retry(timeout_s))
        if blob is None:
            raise URLFetchFailed(f"image_url: {uri} does not exist (no such object); check the URI.", field=FIELD)
        size = int(blob.size or 0)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"{uri} is {size} bytes, more than the {max_bytes}-byte limit; "
                "use a smaller image or raise SEGANY_MAX_BODY_MB.",
                field=FIELD,
            )
        # Pinning the generation keeps the read to the object whose size was just checked.
        data: bytes = blob.download_as_bytes(
            if_generation_match=blob.generation, timeout=timeout_s, retry=_retry(timeout_s)
        )
    except _errors() as exc:
        message = f"image_url: {_describe(exc, uri)}; check the URI and the permissions."
        raise URLFetchFailed(message, field=FIELD) from None
    finally:
        client.close()
    if len(data) > max_bytes:  # only if the server ignored the generation precondition
        raise PayloadTooLarge(f"{uri} is more than the {max_bytes}-byte limit; raise SEGANY_MAX_BODY_MB.", field=FIELD)
    return data


class _ProgressFile:
    """A write-only file that forwards to ``fh`` and reports progress in MiB steps."""

    def __init__(self, fh: BinaryIO, progress: Progress | None) -> None:
        self._fh = fh
        self._progress = progress
        self._pending = 0

    def write(self, data: bytes) -> int:
        written = self._fh.write(data)
        self._pending += len(data)
        if self._pending >= _FLUSH_BYTES:
            self.flush_progress()
        return written

    def flush_progress(self) -> None:
        if self._progress is not None and self._pending:
            self._progress.advance(self._pending)
        self._pending = 0

    def seek(self, offset: int, whence: int = 0) -> int:  # used after decompressive transcoding
        self._pending = 0
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()


def download_object(uri: str, dest: Path, *, progress: Progress | None = None) -> None:
    """Stream an object (a multi-GB checkpoint) to ``dest``.

    uri: ``gs://bucket/object``. dest: the file to write (the caller renames it into place).
    progress: gets start(total size) once, then advance(n) as bytes arrive.
    An interrupted stream is resumed with a range request by the client; the CRC32C
    checksum is verified. Raises CheckpointError naming the URI and the fix, or DependencyMissing.
    """
    try:
        bucket_name, name = parse_uri(uri)
    except ValueError as exc:
        raise CheckpointError(f"{exc} Set SEGANY_CHECKPOINT to a valid URI.") from None
    client = _client()
    try:
        blob = client.bucket(bucket_name).get_blob(name, timeout=(10, 60))
        if blob is None:
            raise CheckpointError(f"checkpoint {uri} does not exist (no such object); {_CHECKPOINT_FIX}.")
        if progress is not None:
            progress.start(int(blob.size) if blob.size is not None else None)
        logger.info("downloading %s (%.1f MB) to %s", uri, (blob.size or 0) / 1e6, dest)
        with open(dest, "wb") as fh:
            sink = _ProgressFile(fh, progress)
            blob.download_to_file(sink, if_generation_match=blob.generation, timeout=(10, 60))
            sink.flush_progress()
    except _errors() as exc:
        raise CheckpointError(f"checkpoint download failed: {_describe(exc, uri)}; {_CHECKPOINT_FIX}.") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint download of {uri} to {dest} failed: {exc}; check free disk space.") from None
    finally:
        client.close()
