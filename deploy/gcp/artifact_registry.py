"""The Artifact Registry repository a release is pushed to
(``REGION-docker.pkg.dev/PROJECT/REPOSITORY``): read, and created with ``--create-repository``.

Two REST calls of the Artifact Registry API v1 (repositories.get, repositories.create, which
answers a long-running operation), made with google-auth's AuthorizedSession rather than one
more client library; ``SEGANY_ARTIFACT_REGISTRY_ENDPOINT`` aims them elsewhere (the tests' fake).
"""

from __future__ import annotations

import os
import time
from typing import Any

from runners.errors import DeployError

API = "https://artifactregistry.googleapis.com"
ENDPOINT_VARIABLE = "SEGANY_ARTIFACT_REGISTRY_ENDPOINT"


def _base() -> str:
    return (os.environ.get(ENDPOINT_VARIABLE) or API).rstrip("/")


def repository_name(project: str, region: str, repository: str) -> str:
    return f"projects/{project}/locations/{region}/repositories/{repository}"


class ArtifactRegistry:
    """The plan's ``artifactregistry`` pseudo-client."""

    def __init__(self, credentials: Any) -> None:
        from google.auth.transport.requests import AuthorizedSession

        self.session = AuthorizedSession(credentials)

    def exists(self, name: str) -> bool:
        answer = self.session.get(f"{_base()}/v1/{name}", timeout=30)
        if answer.status_code == 404:
            return False
        if answer.status_code != 200:
            raise DeployError(f"reading the Artifact Registry repository {name} failed ({answer.status_code}): "
                              f"{answer.text[:300]}")
        return True

    def create_repository(self, parent: str, repository_id: str, repository: dict[str, Any],
                          timeout_s: float = 300) -> dict[str, Any]:
        answer = self.session.post(f"{_base()}/v1/{parent}/repositories", params={"repositoryId": repository_id},
                                   json=repository, timeout=30)
        if answer.status_code != 200:
            raise DeployError(f"creating the repository {repository_id} failed ({answer.status_code}): {answer.text[:300]}; "
                              "it needs roles/artifactregistry.admin, and the Artifact Registry API enabled")
        operation = answer.json()
        deadline = time.monotonic() + timeout_s
        while not operation.get("done"):
            if time.monotonic() > deadline:
                raise DeployError(f"the repository {repository_id} was not created within {timeout_s:.0f} s")
            time.sleep(2)
            operation = self.session.get(f"{_base()}/v1/{operation['name']}", timeout=30).json()
        if "error" in operation:
            raise DeployError(f"creating the repository {repository_id} failed: {operation['error'].get('message')}")
        return operation.get("response", {})
