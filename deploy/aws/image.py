"""The release's image: an ``--image`` already in ECR, or the image from ``segany build`` (an
OCI archive or a local image) pushed to the account's ECR repository, only the layers ECR lacks
(deploy/registry.py). The model refers to the image by digest, so a release is exactly one image.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from deploy.aws.checks import ImageFacts
from deploy.image_source import is_local_registry, release_tag, source_of
from deploy.aws.settings import AwsSettings
from deploy.plan import Call
from deploy.release import APP, APP_TAG


@dataclass(frozen=True)
class ImageResolution:
    uri: str  # what the model's PrimaryContainer.Image gets
    identity: str  # for the release: the manifest digest, or the reference given
    facts: ImageFacts
    calls: tuple[Call, ...] = ()  # create the repository, push


def ecr_auth(ecr: Any) -> Any:
    """ECR's registry and a RegistryAuth from GetAuthorizationToken (valid 12 hours; never logged)."""
    from deploy.registry import RegistryAuth

    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = data["proxyEndpoint"].removeprefix("https://").removeprefix("http://").rstrip("/")
    return RegistryAuth(registry, user, password)


class EcrPusher:
    """The plan's ``registry`` pseudo-client: log in to ECR at apply time, then push."""

    def __init__(self, clients: Any, registry: str | None, progress: Any = None) -> None:
        self.clients, self.registry, self.progress = clients, registry, progress

    def push(self, source: str, dest: str) -> dict[str, Any]:
        from deploy.registry import plan_push, push

        auth = None if self.registry else ecr_auth(self.clients("ecr"))
        local = bool(self.registry) and is_local_registry(self.registry)
        plan = plan_push(source, dest, auth, tls_verify=not local)
        result = push(plan, progress=self.progress)
        return {"digest": result.digest, "bytes_sent": result.bytes_sent}


def resolve_image(s: AwsSettings, clients: Any, account: str, region: str, *, offline: bool) -> ImageResolution:
    if s.image:
        return ImageResolution(s.image, s.image, ImageFacts(None))
    from deploy.registry import plan_push, read_source

    source = source_of(s.oci_archive, s.local_image)
    registry = s.registry or f"{account}.dkr.ecr.{region}.amazonaws.com"
    found = read_source(source)  # manifest digest, labels, layer sizes: from the local image, no registry asked
    tag = release_tag(found.digest)
    dest = f"{registry}/{s.repository}:{tag}"
    calls: list[Call] = []
    to_send = found.size_bytes
    if not offline and not s.registry:
        ecr = clients("ecr")
        try:
            ecr.describe_repositories(repositoryNames=[s.repository])
            to_send = plan_push(source, dest, ecr_auth(ecr)).bytes_to_send
        except ecr.exceptions.RepositoryNotFoundException:
            calls.append(Call("ecr", "create_repository", {
                "repositoryName": s.repository, "imageTagMutability": "MUTABLE",
                "imageScanningConfiguration": {"scanOnPush": True}, "tags": [{"Key": APP_TAG, "Value": APP}],
            }, f"ECR repository {s.repository}"))
    elif s.registry:
        to_send = plan_push(source, dest, None, tls_verify=not is_local_registry(s.registry)).bytes_to_send
    calls.append(Call("registry", "push", {"source": source, "dest": dest},
                      f"push {to_send / 1e6:.1f} MB of {found.size_bytes / 1e6:.1f} MB (layers the registry lacks)"))
    uri = f"{registry}/{s.repository}:{tag}"
    return ImageResolution(uri, found.digest, ImageFacts(found.labels, found.size_bytes), tuple(calls))
