"""A Python base image built from Debian packages, for machines with no container registry.

``debootstrap`` fetches Debian bookworm (minbase, plus python3, python3-pip, python3-venv,
ca-certificates and passwd) from a Debian mirror into a directory; the tree is trimmed
(apt lists and caches, manuals, docs but their copyright files, locales), Debian's
``EXTERNALLY-MANAGED`` marker is removed (BentoML's template runs ``pip install uv`` in the
system Python), and the tree becomes a one-layer image in local storage, ``FROM scratch``:
``buildah from scratch`` + ``buildah add`` + ``buildah commit``, or ``docker``/``podman import``.
It is what ``python:3.11-slim-bookworm`` is for the build: Python 3.11 on Debian 12.

debootstrap needs root (it creates device nodes and chroots to configure packages).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from runners.errors import ConfigError

logger = logging.getLogger(__name__)

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "passwd")
IMAGE_NAME = f"segany-base:{SUITE}"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def image_ref(backend: str) -> str:
    """The name the base has in the backend's storage (buildah and podman add ``localhost/``)."""
    return IMAGE_NAME if backend == "docker" else f"localhost/{IMAGE_NAME}"


def debootstrap_command(rootfs: Path, mirror: str = DEFAULT_MIRROR, arch: str = "amd64") -> list[str]:
    return ["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={','.join(PACKAGES)}",
            SUITE, str(rootfs), mirror]


def import_commands(backend: str, tarball: Path, ref: str) -> list[list[str]]:
    """Commands that turn the root file system tarball into the image ``ref``."""
    config = {"ENV": [f"PATH={PATH}", "LANG=C.UTF-8"], "CMD": '["python3"]'}
    if backend in ("docker", "podman"):
        changes = [f"ENV {value}" for value in config["ENV"]] + [f"CMD {config['CMD']}"]
        return [[backend, "import", *(arg for change in changes for arg in ("--change", change)), str(tarball), ref]]
    if backend == "buildah":
        return [
            ["buildah", "from", "--name", "segany-base-work", "scratch"],
            ["buildah", "add", "segany-base-work", str(tarball), "/"],
            ["buildah", "config", *(arg for env in config["ENV"] for arg in ("--env", env)),
             "--cmd", "python3", "--label", f"org.opencontainers.image.base.name=debian:{SUITE}", "segany-base-work"],
            ["buildah", "commit", "--rm", "segany-base-work", ref],
        ]
    raise ConfigError(f"unknown backend {backend!r}")


def trim(rootfs: Path) -> None:
    """What a container never uses: package lists and caches, manuals, locales, docs."""
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/log/*",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "tmp/*"):
        for path in rootfs.glob(pattern):
            if path.name == "locale.alias":
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (rootfs / "usr/share/doc").rglob("*"):
        if (path.is_file() or path.is_symlink()) and path.name != "copyright":
            path.unlink()
    (rootfs / "var/log").mkdir(exist_ok=True)


def image_exists(backend: str, ref: str) -> bool:
    command = {"docker": ["docker", "image", "inspect", ref],
               "podman": ["podman", "image", "exists", ref],
               "buildah": ["buildah", "inspect", "--type", "image", ref]}[backend]
    return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def ensure_base_image(backend: str, *, mirror: str = DEFAULT_MIRROR, rebuild: bool = False,
                      workdir: Path | None = None) -> str:
    """The Debian base in ``backend``'s storage, built once; returns its reference."""
    ref = image_ref(backend)
    if not rebuild and image_exists(backend, ref):
        logger.info("base image %s: already built", ref)
        return ref
    if shutil.which("debootstrap") is None:
        raise ConfigError("building the base from Debian packages needs debootstrap: apt-get install debootstrap "
                          "(or give --base-image an image your registry serves).")
    if os.geteuid() != 0:
        raise ConfigError("debootstrap needs root: run `sudo segany build ...`, or give --base-image an image "
                          "your registry serves.")
    arch = DEBIAN_ARCH.get(platform.machine().lower())
    if arch is None:
        raise ConfigError(f"no Debian architecture for this machine ({platform.machine()}).")
    with tempfile.TemporaryDirectory(prefix="segany-base-", dir=workdir) as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        logger.info("building the base image from Debian %s packages (%s); takes a few minutes", SUITE, mirror)
        _run(debootstrap_command(rootfs, mirror, arch))
        trim(rootfs)
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."])
        shutil.rmtree(rootfs)
        if backend == "buildah":  # a leftover from an interrupted run would block the name
            subprocess.run(["buildah", "rm", "segany-base-work"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in import_commands(backend, tarball, ref):
            _run(command)
    logger.info("base image %s: built", ref)
    return ref


def _run(command: list[str]) -> None:
    logger.debug("running %s", " ".join(command))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-15:])
        raise ConfigError(f"`{' '.join(command[:3])} ...` failed (exit {result.returncode}):\n{tail}")
