"""Amazon S3 reads: ``s3://bucket/key`` image URLs and model checkpoints.

boto3 is imported only inside these functions (it is the optional ``[aws]`` extra). The
client follows the standard AWS environment: credentials chain, ``AWS_ENDPOINT_URL``
(boto3 >= 1.28) and ``AWS_DEFAULT_REGION`` (default us-east-1).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from deploy.uris import split_bucket_uri
from runners.errors import CheckpointError, DependencyMissing, PayloadTooLarge, URLFetchFailed
from runners.progress import Progress

logger = logging.getLogger(__name__)

FIELD = "image_url"
_INSTALL = "pip install 'segment-anywhere[aws]'"
_CHECKPOINT_FIX = "check the path, the AWS credentials and region, or set SEGANY_MODEL=tiny to run offline"


def parse_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key); ValueError when either is empty."""
    return split_bucket_uri(uri, "s3", "key")


def _client(*, connect_timeout: float, read_timeout: float, attempts: int) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise DependencyMissing(f"s3:// URIs need boto3; run `{_INSTALL}`.", status=501) from None
    session = boto3.session.Session()
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
    )
    return session.client("s3", region_name=session.region_name or "us-east-1", config=config)


S3_NO_KEY = ("404", "NoSuchKey", "NotFound")  # the object is not there (the bucket may be)


def error_of(exc: Exception) -> dict[str, str]:
    """A botocore ClientError's ``Error`` (``Code``, ``Message``); empty for any other exception."""
    response = getattr(exc, "response", None)
    return response.get("Error", {}) if isinstance(response, dict) else {}


def _describe(exc: Exception, uri: str) -> str:
    """What went wrong, in words, for a botocore exception."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in S3_NO_KEY + ("NoSuchBucket",) or status == 404:
            return f"{uri} does not exist (no such bucket or key)"
        if code in ("403", "AccessDenied", "Forbidden", "AllAccessDisabled") or status == 403:
            return f"access to {uri} was denied (the server's AWS identity needs s3:GetObject on it)"
        message = response.get("Error", {}).get("Message") or ""
        return f"reading {uri} failed: {code or status} {message}".rstrip()
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return f"reading {uri} needs AWS credentials and the server has none configured"
    return f"reading {uri} failed: {exc}"


def read_object(uri: str, *, max_bytes: int, timeout_s: float) -> bytes:
    """Read a whole object for ``image_url``.

    uri: ``s3://bucket/key``. max_bytes: size cap, checked with HEAD before reading.
    timeout_s: connect and per-read timeout (botocore has no overall deadline).
    Raises PayloadTooLarge, URLFetchFailed or DependencyMissing.
    """
    try:
        bucket, key = parse_uri(uri)
    except ValueError as exc:
        raise URLFetchFailed(str(exc), field=FIELD) from None
    client = _client(connect_timeout=timeout_s, read_timeout=timeout_s, attempts=2)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        if size > max_bytes:
            raise PayloadTooLarge(
                f"{uri} is {size} bytes, more than the {max_bytes}-byte limit; "
                "use a smaller image or raise SEGANY_MAX_BODY_MB.",
                field=FIELD,
            )
        if size == 0:
            return b""
        # The range keeps the read bounded even if the object is replaced after the HEAD.
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"]
        try:
            data = body.read(max_bytes + 1)
        finally:
            body.close()
    except (BotoCoreError, ClientError) as exc:
        message = f"image_url: {_describe(exc, uri)}; check the URI and the permissions."
        raise URLFetchFailed(message, field=FIELD) from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"{uri} is more than the {max_bytes}-byte limit; use a smaller image or raise SEGANY_MAX_BODY_MB.",
            field=FIELD,
        )
    return data


class _LockedProgress:
    """Serialises advance() calls: the transfer manager reports from several threads."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, n_bytes: int) -> None:
        with self._lock:
            self._progress.advance(n_bytes)


def download_object(uri: str, dest: Path, *, progress: Progress | None = None) -> None:
    """Stream an object (a multi-GB checkpoint) to ``dest``.

    uri: ``s3://bucket/key``. dest: the file to write (the caller renames it into place).
    progress: gets start(total size) once, then advance(n) per chunk received.
    Raises CheckpointError naming the URI and the fix, or DependencyMissing.
    """
    try:
        bucket, key = parse_uri(uri)
    except ValueError as exc:
        raise CheckpointError(f"{exc} Set SEGANY_CHECKPOINT to a valid URI.") from None
    client = _client(connect_timeout=10.0, read_timeout=60.0, attempts=5)
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError

    try:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        if progress is not None:
            progress.start(size)
        callback = _LockedProgress(progress) if progress is not None else None
        logger.info("downloading %s (%.1f MB) to %s", uri, size / 1e6, dest)
        with open(dest, "wb") as fh:
            client.download_fileobj(
                bucket, key, fh, Callback=callback,
                Config=TransferConfig(multipart_chunksize=64 * 1024 * 1024, max_concurrency=8),
            )
    except (BotoCoreError, ClientError, RetriesExceededError) as exc:
        raise CheckpointError(f"checkpoint download failed: {_describe(exc, uri)}; {_CHECKPOINT_FIX}.") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint download of {uri} to {dest} failed: {exc}; check free disk space.") from None
