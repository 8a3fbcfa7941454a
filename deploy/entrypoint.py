"""The image's entrypoint: ``segany entrypoint [serve]``.

SageMaker starts a container as ``IMAGE serve``; Cloud Run starts it with no arguments.
So ``segany entrypoint serve`` serves SageMaker's contract (``/ping``, ``/invocations``
on port 8080 or ``SAGEMAKER_BIND_TO_PORT``) and ``segany entrypoint`` serves Cloud Run's
(``$PORT``, JSON logs when ``K_SERVICE`` is set). Both run the same service through
``bentoml serve`` with a graceful-shutdown window, and both bind 0.0.0.0.

The platform variables are read here, once, into :class:`ContainerConfig`; the worker
processes get the decision through ``SEGANY_PLATFORM``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from deploy.limits import CLOUD_RUN_DEFAULT_PORT, CLOUD_RUN_SHUTDOWN_GRACE_S, SAGEMAKER, SAGEMAKER_PORT
from runners.errors import ConfigError

CONTAINER_SERVICE = "deploy.container_service:SegmentAnything"
PLATFORMS = ("sagemaker", "cloudrun")


@dataclass(frozen=True)
class ContainerConfig:
    platform: str  # "sagemaker" or "cloudrun"
    host: str
    port: int
    shutdown_grace_s: int  # SEGANY_SHUTDOWN_GRACE_S: in-flight requests get this long after SIGTERM
    sagemaker_mode: str  # SEGANY_SAGEMAKER_MODE: realtime, serverless, async or batch (response limits)
    json_logs: bool  # on Cloud Run (K_SERVICE) or SEGANY_LOG_FORMAT=json
    gcp_project: str | None  # GOOGLE_CLOUD_PROJECT, for trace names in logs

    @classmethod
    def from_env(cls, platform: str, env: Mapping[str, str] | None = None) -> "ContainerConfig":
        env = os.environ if env is None else env
        if platform not in PLATFORMS:
            raise ConfigError(f"unknown platform {platform!r}; one of {', '.join(PLATFORMS)}.")
        port_variable = "SAGEMAKER_BIND_TO_PORT" if platform == "sagemaker" else "PORT"
        default_port = SAGEMAKER_PORT if platform == "sagemaker" else CLOUD_RUN_DEFAULT_PORT
        mode = env.get("SEGANY_SAGEMAKER_MODE", "realtime").strip().lower()
        if mode not in SAGEMAKER:
            raise ConfigError(f"SEGANY_SAGEMAKER_MODE={mode!r} is not one of {', '.join(SAGEMAKER)}.")
        return cls(
            platform=platform,
            host=env.get("SEGANY_HOST", "0.0.0.0"),
            port=_integer(env, port_variable, default_port),
            shutdown_grace_s=_integer(env, "SEGANY_SHUTDOWN_GRACE_S", CLOUD_RUN_SHUTDOWN_GRACE_S),
            sagemaker_mode=mode,
            json_logs=bool(env.get("K_SERVICE")) or env.get("SEGANY_LOG_FORMAT", "").lower() == "json",
            gcp_project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or None,
        )


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name}={raw!r} is not a whole number; for example {name}={default}.")
    return int(raw)


def platform_for(args: Sequence[str]) -> str:
    """SageMaker passes ``serve``; Cloud Run passes nothing."""
    if list(args) == ["serve"]:
        return "sagemaker"
    if not args:
        return "cloudrun"
    raise ConfigError(
        f"unexpected arguments {' '.join(args)!r}: the entrypoint takes `serve` (SageMaker) or nothing (Cloud Run)."
    )


def serve_command(config: ContainerConfig) -> list[str]:
    working_dir = Path(__file__).resolve().parents[1]  # where service.py, runners/ and deploy/ live
    return [
        sys.executable, "-m", "bentoml", "serve", CONTAINER_SERVICE,
        "--host", config.host, "--port", str(config.port),
        "--timeout-graceful-shutdown", str(config.shutdown_grace_s),
        "--working-dir", str(working_dir),
    ]


def run(args: Sequence[str]) -> None:
    """Replace this process with the server (so the platform's SIGTERM reaches it)."""
    config = ContainerConfig.from_env(platform_for(args))
    os.environ["SEGANY_PLATFORM"] = config.platform
    command = serve_command(config)
    os.execv(command[0], command)
