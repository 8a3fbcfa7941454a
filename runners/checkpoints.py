"""Find, download, verify and cache the SAM checkpoint.

Sources, in the order they are considered:

1. ``SEGANY_CHECKPOINT``: a local file or directory, ``file://``, ``http(s)://``, ``s3://``
   or ``gs://``;
2. the SageMaker model directory (``SM_MODEL_DIR`` or ``/opt/ml/model``) when it holds a
   ``.pth``/``.pt`` file (SageMaker extracts ``model.tar.gz`` there);
3. for ``tiny``, the deterministic checkpoint, written once into the cache;
4. the official download URL of the model type.

Remote files are downloaded once into ``SEGANY_CACHE_DIR/checkpoints`` with a progress
bar, hashed while they stream, and verified against the known digest of the official
files or ``SEGANY_CHECKPOINT_SHA256``. A verified file gets a ``.sha256`` sidecar so later
starts do not hash gigabytes again.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager
from urllib.parse import urlparse

from .errors import CheckpointError
from .specs import OFFICIAL_DIGESTS, ModelSpec
from .progress import Progress, transfer_progress
from .settings import Settings

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt")
OFFLINE_HINT = "To run without network access, set SEGANY_MODEL=tiny, or point SEGANY_CHECKPOINT at a local file."
ProgressFactory = Callable[[str], ContextManager[Progress]]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint file on local disk, ready for ``models.load_sam``."""

    path: Path
    source: str  # what it was resolved from (URI, path, "sagemaker", "tiny")
    sha256: str | None  # verified digest, when one was known


def resolve_checkpoint(
    settings: Settings, spec: ModelSpec, *, progress: ProgressFactory = transfer_progress
) -> ResolvedCheckpoint:
    """Return a local, verified checkpoint for ``spec``; raise CheckpointError otherwise."""
    source = settings.checkpoint
    if source is None:
        found = _find_in_directory(settings.sagemaker_model_dir, spec, required=False)
        if found is not None:
            logger.info("using the checkpoint in the SageMaker model directory: %s", found)
            return _verify_local(found, settings.checkpoint_sha256, source=str(found))
        if spec.checkpoint_url is None:
            return _tiny_checkpoint(settings, spec)
        source = spec.checkpoint_url
    expected = settings.checkpoint_sha256 or OFFICIAL_DIGESTS.get(source)
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https", "s3", "gs"):
        return _cached_download(source, expected, settings.cache_dir, progress)
    if scheme in ("", "file"):
        path = Path(urlparse(source).path if scheme == "file" else source).expanduser()
        if path.is_dir():
            path = _find_in_directory(path, spec, required=True)
        if not path.is_file():
            raise CheckpointError(f"SEGANY_CHECKPOINT={source!r}: no such file. Check the path. {OFFLINE_HINT}")
        return _verify_local(path, expected, source=source)
    raise CheckpointError(
        f"SEGANY_CHECKPOINT={source!r} has an unsupported scheme {scheme!r}; "
        "use a local path, https://, s3:// or gs://."
    )


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- local files --------------------------------------------------------------------------------


def _find_in_directory(directory: Path, spec: ModelSpec, *, required: bool) -> Path | None:
    """The one checkpoint file in ``directory`` (or one level below), preferring the official name."""
    if not directory.is_dir():
        return None
    candidates = sorted(
        p for pattern in ("*", "*/*") for p in directory.glob(pattern)
        if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES
    )
    if not candidates:
        if required:
            raise CheckpointError(f"{directory} holds no .pth or .pt file; put the SAM checkpoint there.")
        return None
    if len(candidates) == 1:
        return candidates[0]
    named = [p for p in candidates if p.name == spec.checkpoint_filename]
    if len(named) == 1:
        return named[0]
    listing = ", ".join(str(p) for p in candidates[:5])
    raise CheckpointError(
        f"{directory} holds several checkpoints ({listing}); set SEGANY_CHECKPOINT to the one to serve."
    )


def _verify_local(path: Path, expected: str | None, *, source: str) -> ResolvedCheckpoint:
    if expected is None:
        return ResolvedCheckpoint(path, source, None)
    if _sidecar_digest(path) == expected:
        return ResolvedCheckpoint(path, source, expected)
    actual = sha256_of_file(path)
    if actual != expected:
        raise CheckpointError(
            f"{path} has sha256 {actual}, expected {expected}. The file is corrupt or not the one meant: "
            "replace it, or set SEGANY_CHECKPOINT_SHA256 to its digest if it is the right file."
        )
    return ResolvedCheckpoint(path, source, actual)


def _sidecar_digest(path: Path) -> str | None:
    """The digest recorded when ``path`` was verified, if the file is unchanged since."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        digest, size = sidecar.read_text().split()
        return digest if int(size) == path.stat().st_size else None
    except (OSError, ValueError):
        return None


def _write_sidecar(path: Path, digest: str) -> None:
    try:
        path.with_name(path.name + ".sha256").write_text(f"{digest} {path.stat().st_size}\n")
    except OSError:  # a read-only cache still works; it just hashes again next start
        logger.warning("could not record the digest of %s", path)


def _tiny_checkpoint(settings: Settings, spec: ModelSpec) -> ResolvedCheckpoint:
    path = settings.cache_dir / "checkpoints" / f"sam_{spec.name}_seed0.pth"
    if not path.is_file():
        logger.info("writing the deterministic %s checkpoint to %s", spec.name, path)
        from .models import write_checkpoint  # torch; this module stays importable without it

        try:
            write_checkpoint(spec, path)
        except OSError as exc:
            raise CheckpointError(f"cannot write {path}: {exc}. Set SEGANY_CACHE_DIR to a writable directory.") from exc
    return ResolvedCheckpoint(path, "tiny", None)


# --- downloads ----------------------------------------------------------------------------------


def _cached_download(uri: str, expected: str | None, cache_dir: Path, progress: ProgressFactory) -> ResolvedCheckpoint:
    from filelock import FileLock  # comes with torch

    name = Path(urlparse(uri).path).name or "checkpoint.pth"
    dest = cache_dir / "checkpoints" / hashlib.sha256(uri.encode()).hexdigest()[:16] / name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create {dest.parent}: {exc}. Set SEGANY_CACHE_DIR to a writable directory.") from exc
    with FileLock(str(dest) + ".lock"):  # one download even when several workers start at once
        if dest.is_file():
            recorded = _sidecar_digest(dest)
            if recorded is not None and (expected is None or recorded == expected):
                logger.info("using cached checkpoint %s", dest)
                return ResolvedCheckpoint(dest, uri, recorded)
        partial = dest.with_name(dest.name + ".part")
        with progress(f"downloading {uri}") as bar:
            digest = _download(uri, partial, bar)
        if expected is not None and digest != expected:
            partial.unlink(missing_ok=True)
            raise CheckpointError(
                f"{uri} downloaded with sha256 {digest}, expected {expected}. The download is corrupt or the "
                "file changed: retry, or set SEGANY_CHECKPOINT_SHA256 to the new digest if you trust it."
            )
        partial.replace(dest)
        _write_sidecar(dest, digest)
        return ResolvedCheckpoint(dest, uri, digest if expected is not None else None)


def _download(uri: str, dest: Path, bar: Progress) -> str:
    """Stream ``uri`` into ``dest``; return the sha256 of what was written."""
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("s3", "gs"):
        store = importlib.import_module("deploy.aws.s3" if scheme == "s3" else "deploy.gcp.gcs")
        store.download_object(uri, dest, progress=bar)
        return sha256_of_file(dest)
    import httpx

    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", uri, follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0)) as response:
            if response.status_code >= 400:
                raise CheckpointError(f"{uri} answered HTTP {response.status_code}. Check the URL. {OFFLINE_HINT}")
            total = response.headers.get("content-length")
            bar.start(int(total) if total and total.isdigit() else None)
            with dest.open("wb") as f:
                for chunk in response.iter_bytes(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.advance(len(chunk))
    except httpx.HTTPError as exc:
        dest.unlink(missing_ok=True)
        raise CheckpointError(f"could not download {uri}: {type(exc).__name__}: {exc}. {OFFLINE_HINT}") from exc
    return digest.hexdigest()
