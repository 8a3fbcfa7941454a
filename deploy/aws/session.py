"""boto3 clients for one command: the standard credential chain and region, and the standard
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` variables (botocore reads them itself), so
every command runs unchanged against a local AWS emulator. Credentials are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runners.errors import ConfigError, DependencyMissing, DeployError


@dataclass
class Clients:
    region: str | None = None
    _session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            import boto3
        except ImportError:
            raise DependencyMissing("segany deploy aws needs boto3: pip install 'segment-anywhere[aws]'") from None
        self._session = boto3.session.Session(region_name=self.region)
        if not self._session.region_name:
            raise ConfigError("no AWS region: give --region (or region in [aws], or AWS_REGION / AWS_DEFAULT_REGION)")
        self.region = self._session.region_name

    def __call__(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service)
        return self._clients[service]

    def has_credentials(self) -> bool:
        return self._session.get_credentials() is not None

    def account(self) -> str:
        try:
            return self("sts").get_caller_identity()["Account"]
        except Exception as exc:
            raise DeployError(f"AWS refused the credentials found ({type(exc).__name__}); check AWS_PROFILE or "
                              "your credentials with `aws sts get-caller-identity`") from None
