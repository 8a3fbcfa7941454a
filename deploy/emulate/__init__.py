"""``segany emulate TARGET``: the real server process behind a front that enforces one platform's
contract and limits (deploy/limits.py), so that a client's handling of them can be tested locally.

:func:`build` makes the front (an ASGI app) and its instance; ``command.py`` serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `segany --help` stays fast
    from deploy.emulate.lifecycle import Instance
    from deploy.emulate.limits_front import Front

TARGETS = ("sagemaker-realtime", "sagemaker-serverless", "sagemaker-async", "cloudrun")


def instance_for(target: str, env: dict[str, str], log_dir: Path, memory_mb: int | None = None) -> "Instance":
    """The server process as the image runs on ``target`` (SageMaker: ``serve`` and its mode)."""
    from deploy.emulate.lifecycle import Instance

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    if target == "cloudrun":
        return Instance("cloudrun", env, log_dir, memory_mb)
    return Instance("sagemaker", env, log_dir, memory_mb, sagemaker_mode=target.removeprefix("sagemaker-"))


def build(target: str, instance: Instance, *, idle_s: float | None = None, timeout_s: float | None = None,
          max_concurrency: int | None = None, endpoint: str | None = None, output: str | None = None) -> "Front":
    """The front for ``target`` over ``instance`` (several fronts may share one instance)."""
    if target == "cloudrun":
        from deploy.emulate import cloudrun

        return cloudrun.front(instance, idle_s=idle_s, timeout_s=timeout_s, max_concurrency=max_concurrency)
    if target == "sagemaker-async":
        from deploy.emulate import sagemaker_async

        if output is None:
            raise ValueError("sagemaker-async needs --output s3://bucket/prefix (results and failures go under it)")
        return sagemaker_async.front(instance, output, endpoint=endpoint, idle_s=idle_s, timeout_s=timeout_s,
                                     max_concurrency=max_concurrency)
    if target in ("sagemaker-realtime", "sagemaker-serverless"):
        from deploy.emulate import sagemaker

        if target == "sagemaker-realtime" and max_concurrency is not None:
            raise ValueError("--max-concurrency is SageMaker Serverless' MaxConcurrency; a real-time endpoint has none")
        return sagemaker.front(target.removeprefix("sagemaker-"), instance, endpoint=endpoint, idle_s=idle_s,
                               timeout_s=timeout_s, max_concurrency=max_concurrency)
    raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
