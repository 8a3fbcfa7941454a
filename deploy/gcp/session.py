"""google-cloud-run clients for one command: Application Default Credentials, the REST
transport, and ``SEGANY_CLOUD_RUN_ENDPOINT`` to aim them at another endpoint (a local fake or
emulator: anonymous credentials there). Credentials are never logged."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from runners.errors import DependencyMissing, DeployError

ENDPOINT_VARIABLE = "SEGANY_CLOUD_RUN_ENDPOINT"
KINDS = {"services": "ServicesClient", "revisions": "RevisionsClient", "jobs": "JobsClient", "executions": "ExecutionsClient"}


@dataclass
class GcpClients:
    _clients: dict[str, Any] = field(default_factory=dict)
    _credentials: Any = None
    _checked: bool = False

    def __post_init__(self) -> None:
        try:
            import google.cloud.run_v2  # noqa: F401
        except ImportError:
            raise DependencyMissing("segany deploy gcp needs google-cloud-run: pip install 'segment-anywhere[gcp]'") from None

    @property
    def endpoint(self) -> str | None:
        return os.environ.get(ENDPOINT_VARIABLE) or None

    def credentials(self) -> Any | None:
        """Application Default Credentials, anonymous against a local endpoint, None when there are none."""
        if not self._checked:
            self._checked = True
            if self.endpoint:
                from google.auth.credentials import AnonymousCredentials

                self._credentials = AnonymousCredentials()
            else:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError

                try:
                    self._credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
                except DefaultCredentialsError:
                    self._credentials = None
        return self._credentials

    def has_credentials(self) -> bool:
        return self.credentials() is not None

    def access_token(self) -> str:
        """An OAuth access token (Artifact Registry's password for the user oauth2accesstoken)."""
        from google.auth.transport.requests import Request

        credentials = self.credentials()
        if credentials is None:
            raise DeployError("no Google Cloud credentials: run `gcloud auth application-default login`")
        credentials.refresh(Request())
        return credentials.token

    def __call__(self, kind: str) -> Any:
        if kind not in self._clients:
            from google.api_core.client_options import ClientOptions
            from google.cloud import run_v2

            if self.credentials() is None:
                raise DeployError("no Google Cloud credentials (Application Default Credentials): run "
                                  "`gcloud auth application-default login`, or add --dry-run to see the plan offline")
            options = ClientOptions(api_endpoint=self.endpoint) if self.endpoint else None
            self._clients[kind] = getattr(run_v2, KINDS[kind])(credentials=self.credentials(), transport="rest",
                                                                client_options=options)
        return self._clients[kind]


def as_dict(message: Any) -> dict[str, Any]:
    """A proto-plus message (Service, Job, Revision) or protobuf (IAM Policy) as a dict with
    snake_case keys, the form our requests are written in."""
    if hasattr(type(message), "to_dict"):
        return type(message).to_dict(message, preserving_proto_field_name=True, use_integers_for_enums=False)
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)
