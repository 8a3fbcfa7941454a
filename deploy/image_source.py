"""Where a release's image comes from and what it is called once pushed, for both clouds.

- :func:`source_of`: the skopeo source of ``--oci-archive FILE`` or ``--local-image REF`` (a bare
  reference is a ``containers-storage:`` image, as ``segany build`` with buildah or podman leaves it);
- :func:`release_tag`: the tag a pushed image gets, from the local manifest's digest (the registry's
  own digest is known only after a push from local storage, which compresses the layers);
- :func:`is_local_registry`: a registry on this machine (tests, mirrors): no TLS verification, no login.
"""

from __future__ import annotations

TRANSPORTS = ("containers-storage", "docker-daemon", "docker", "oci-archive")
LOCAL_HOSTS = ("127.", "localhost")


def source_of(oci_archive: str | None, local_image: str | None) -> str:
    if oci_archive:
        return f"oci-archive:{oci_archive}"
    ref = local_image or ""
    return ref if ref.split(":", 1)[0] in TRANSPORTS else f"containers-storage:{ref}"


def release_tag(digest: str) -> str:
    return "sha-" + digest.split(":", 1)[1][:12]


def is_local_registry(registry: str) -> bool:
    return registry.startswith(LOCAL_HOSTS)
