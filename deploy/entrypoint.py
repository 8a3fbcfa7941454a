"""The image's entrypoint: ``segany entrypoint [serve]``.

SageMaker starts a container as ``IMAGE serve``; Cloud Run starts it with no arguments.
So ``segany entrypoint serve`` serves SageMaker's contract (``/ping``, ``/invocations``
on port 8080 or ``SAGEMAKER_BIND_TO_PORT``) and ``segany entrypoint`` serves Cloud Run's
(``$PORT``, JSON logs when ``K_SERVICE`` is set). Both run the same service with a
graceful-shutdown window, and both bind 0.0.0.0.

One process serves (``SEGANY_SUPERVISOR=off``, the default): the entrypoint binds the port and
becomes BentoML's service worker (``deploy/worker.py``: ``python -m
_bentoml_impl.worker.service --fd N``, the very command ``bentoml serve``'s supervisor runs in
a child). Both platforms restart a container whose server exits, so the supervisor's restart
loop adds nothing there, and skipping it (its interpreter, BentoML's CLI and a first import of
the service) makes a cold start ready 1.3-1.5 s sooner here. ``SEGANY_SUPERVISOR=on`` runs
``bentoml serve`` (supervisor and worker) instead; so does a BentoML without that worker module.

The platform variables are read here, once, into :class:`ContainerConfig`; the worker
processes get the decision through ``SEGANY_PLATFORM``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from deploy.limits import CLOUD_RUN_DEFAULT_PORT, CLOUD_RUN_SHUTDOWN_GRACE_S, SAGEMAKER, SAGEMAKER_PORT
from deploy.worker import BENTOML_WORKER
from runners.errors import ConfigError
from runners.settings import EnvReader

logger = logging.getLogger(__name__)

CONTAINER_SERVICE = "deploy.container_service:SegmentAnything"
PLATFORMS = ("sagemaker", "cloudrun")
LISTEN_BACKLOG = 2048  # bentoml serve's default
WORKING_DIR = Path(__file__).resolve().parents[1]  # where service.py, runners/ and deploy/ live


@dataclass(frozen=True)
class ContainerConfig:
    platform: str  # "sagemaker" or "cloudrun"
    host: str
    port: int
    shutdown_grace_s: int  # SEGANY_SHUTDOWN_GRACE_S: in-flight requests get this long after SIGTERM
    sagemaker_mode: str  # SEGANY_SAGEMAKER_MODE: realtime, serverless, async or batch (response limits)
    json_logs: bool  # on Cloud Run (K_SERVICE) or SEGANY_LOG_FORMAT=json
    gcp_project: str | None  # GOOGLE_CLOUD_PROJECT, for trace names in logs
    supervisor: bool  # SEGANY_SUPERVISOR=on: bentoml serve's supervisor and a worker; off: one process
    custom_attributes: str = ""  # SEGANY_CUSTOM_ATTRIBUTES: defaults for raw-image /invocations (Batch Transform sends none)

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
            supervisor=EnvReader(env).choice("SEGANY_SUPERVISOR", ("off", "on"), "off") == "on",
            custom_attributes=env.get("SEGANY_CUSTOM_ATTRIBUTES", "").strip(),
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
    """``bentoml serve``: a supervisor process that binds the port and runs the worker below."""
    return [
        sys.executable, "-m", "bentoml", "serve", CONTAINER_SERVICE,
        "--host", config.host, "--port", str(config.port),
        "--timeout-graceful-shutdown", str(config.shutdown_grace_s),
        "--working-dir", str(WORKING_DIR),
    ]


def worker_command(config: ContainerConfig, fd: int) -> list[str]:
    """BentoML's service worker serving the listening socket ``fd`` on its own: the arguments
    ``bentoml serve`` gives its worker, less the supervisor's bookkeeping."""
    return [
        sys.executable, "-m", "deploy.worker", CONTAINER_SERVICE,
        "--fd", str(fd), "--worker-id", "1",
        "--timeout-graceful-shutdown", str(config.shutdown_grace_s),
    ]


def listen(config: ContainerConfig) -> socket.socket:
    """The server's socket, bound and listening, kept open across exec."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(config.host).version == 6 else socket.AF_INET
    except ValueError:
        raise ConfigError(f"SEGANY_HOST={config.host!r} is not an IP address; for example 0.0.0.0 or ::.") from None
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((config.host, config.port))
    except OSError as exc:
        server.close()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}; "
                          "free the port or choose another (PORT, SAGEMAKER_BIND_TO_PORT).") from None
    server.listen(LISTEN_BACKLOG)
    server.set_inheritable(True)
    return server


def single_process_available() -> bool:
    return importlib.util.find_spec(BENTOML_WORKER) is not None  # its parent packages are empty


def run(args: Sequence[str]) -> None:
    """Replace this process with the server (so the platform's SIGTERM reaches it)."""
    config = ContainerConfig.from_env(platform_for(args))
    os.environ["SEGANY_PLATFORM"] = config.platform
    if config.supervisor or not single_process_available():
        if not config.supervisor:
            logger.warning("this BentoML has no %s; serving through bentoml serve", BENTOML_WORKER)
        command = serve_command(config)
    else:
        server_socket = listen(config)  # held until exec: a collected socket closes its fd
        command = worker_command(config, server_socket.fileno())
        # What bentoml serve prepares for its workers: a fresh directory for the metrics of
        # Prometheus' multiprocess mode, and the working directory the service imports from.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="segany-prometheus-")
        os.chdir(WORKING_DIR)
    os.execv(command[0], command)
