"""Facts about a built image (reference, id, digest, size) and its export as an OCI archive.

Sizes are uncompressed (the layers as stored locally), which is what an image takes once
pulled; an OCI archive's layers are gzip-compressed, as a registry stores them.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.errors import ConfigError


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    image_id: str  # the config digest
    digest: str | None  # the manifest digest in local storage (docker: the registry's, once pushed)
    size_bytes: int  # uncompressed


def inspect_image(backend: str, ref: str) -> ImageInfo:
    command = {"buildah": ["buildah", "inspect", "--type", "image", ref],
               "podman": ["podman", "image", "inspect", ref],
               "docker": ["docker", "image", "inspect", ref]}[backend]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"the build did not produce {ref}: {result.stderr.strip()[-500:]}")
    return image_info(backend, ref, json.loads(result.stdout))


def image_info(backend: str, ref: str, data: Any) -> ImageInfo:
    """ImageInfo from ``buildah inspect`` (a dict) or ``podman``/``docker image inspect`` (a list)."""
    if backend == "buildah":
        manifest = json.loads(data["Manifest"])
        size = sum(layer["size"] for layer in manifest["layers"])  # stored uncompressed: sizes are the tars'
        return ImageInfo(ref, _sha(data["FromImageID"]), data.get("FromImageDigest") or None, size)
    entry = data[0]
    digest = entry.get("Digest") or next(iter(entry.get("RepoDigests") or []), None)
    if digest and "@" in digest:
        digest = digest.split("@", 1)[1]
    return ImageInfo(ref, _sha(entry["Id"]), digest, int(entry["Size"]))


def _sha(value: str) -> str:
    return value if value.startswith("sha256:") else f"sha256:{value}"


def export_command(backend: str, ref: str, archive: Path) -> list[str]:
    name = ref.rsplit("/", 1)[-1]
    if backend == "buildah":
        return ["buildah", "push", ref, f"oci-archive:{archive}:{name}"]
    if backend == "podman":
        return ["podman", "save", "--format", "oci-archive", "-o", str(archive), ref]
    return ["skopeo", "copy", f"docker-daemon:{ref}", f"oci-archive:{archive}:{name}"]


def export_oci_archive(backend: str, ref: str, archive: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Write ``archive``; return its manifest digest and the total of its (compressed) blobs."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    if archive.exists():
        archive.unlink()
    result = subprocess.run(export_command(backend, ref, archive), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        hint = " (docker images are exported with skopeo: install it)" if backend == "docker" else ""
        raise ConfigError(f"exporting {ref} to {archive} failed{hint}: {result.stderr.strip()[-800:]}")
    return archive_manifest(archive)


def archive_manifest(archive: Path) -> tuple[str, int]:
    """The manifest digest of an OCI archive's first image and the size of its config and layers."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        descriptor = index["manifests"][0]
        algorithm, digest = descriptor["digest"].split(":", 1)
        manifest = json.load(tar.extractfile(f"blobs/{algorithm}/{digest}"))  # type: ignore[arg-type]
    size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    return descriptor["digest"], size
