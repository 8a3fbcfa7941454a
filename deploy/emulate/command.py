"""``segany emulate TARGET``: serve one platform's contract locally, in front of the real server.

    segany emulate sagemaker-serverless --port 8080 --memory-mb 3072 --max-concurrency 2 --idle-s 60
    AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:8080 python -c 'import boto3; ...invoke_endpoint(...)'
    segany emulate sagemaker-async --output s3://bucket/sam --idle-s 300   # S3 from AWS_ENDPOINT_URL (moto) or AWS
    segany emulate cloudrun --port 8081 --timeout-s 300 --max-concurrency 2 --idle-s 900
    curl 127.0.0.1:8081/emulator/status
    segany emulate sagemaker-batch --input s3://bucket/in --output s3://bucket/out --custom-attributes task=everything
    segany emulate cloudrun-job --input gs://bucket/in --output gs://bucket/out --tasks 2 --memory-mb 2048 -- --task everything
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click

from deploy.emulate import TARGETS
from deploy.emulate.jobs import JOB_TARGETS
from deploy.limits import SERVERLESS_MEMORY_MB

logger = logging.getLogger(__name__)


def _env(model: str | None, checkpoint: str | None, pairs: tuple[str, ...]) -> dict[str, str]:
    env = dict(os.environ)
    if model:
        env["SEGANY_MODEL"] = model
    if checkpoint:
        env["SEGANY_CHECKPOINT"] = checkpoint
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    return env


@click.command("emulate", context_settings={"show_default": True})
@click.argument("target", type=click.Choice(TARGETS + JOB_TARGETS))
@click.option("--port", default=8080, help="Where the emulator listens (127.0.0.1 unless --host).")
@click.option("--host", default="127.0.0.1", help="Address to bind.")
@click.option("--idle-s", type=float, default=None,
              help="Scale to zero after this many seconds without requests (serverless, cloudrun; real-time never does).")
@click.option("--memory-mb", type=int, default=None, help="Cap the server's memory with a cgroup (root on Linux; skipped with a note elsewhere).")
@click.option("--max-concurrency", type=int, default=None,
              help="Serverless MaxConcurrency / Cloud Run concurrency / async MaxConcurrentInvocationsPerInstance "
                   "(default: what segany deploy uses).")
@click.option("--timeout-s", type=float, default=None,
              help="Cloud Run's request timeout (default: segany deploy gcp's). On SageMaker the 60 s is fixed: a lower "
                   "value is a test setting.")
@click.option("--model", type=click.Choice(["tiny", "vit_b", "vit_l", "vit_h"]), default=None, help="SEGANY_MODEL for the server.")
@click.option("--checkpoint", default=None, help="SEGANY_CHECKPOINT for the server.")
@click.option("--endpoint", default=None, help="SageMaker: answer only this endpoint name (default: any).")
@click.option("--output", default=None, help="sagemaker-async: s3://bucket/prefix; results under /results, failures under /failures.")
@click.option("--env", "env_pairs", multiple=True, help="KEY=VALUE for the server process (repeatable).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Server logs (default: a temporary folder).")
@click.option("--job", "job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="sagemaker-batch / cloudrun-job: the job as a deploy's --dry-run prints it (JSON); flags override it.")
@click.option("--input", "input_uri", default=None, help="sagemaker-batch: s3:// prefix; cloudrun-job: a folder, s3:// or gs://.")
@click.option("--custom-attributes", default=None, help="sagemaker-batch: SEGANY_CUSTOM_ATTRIBUTES, e.g. task=everything.")
@click.option("--max-payload-mb", type=int, default=None, help="sagemaker-batch: MaxPayloadInMB (default 6).")
@click.option("--max-retries", type=int, default=None,
              help="sagemaker-batch: InvocationsMaxRetries (default 3); cloudrun-job: max_retries (default 3).")
@click.option("--tasks", type=int, default=None, help="cloudrun-job: task_count.")
@click.option("--parallelism", type=int, default=None, help="cloudrun-job: tasks at a time (0: all).")
@click.argument("batch_args", nargs=-1, type=click.UNPROCESSED)
def emulate(target: str, port: int, host: str, idle_s: float | None, memory_mb: int | None, max_concurrency: int | None,
            timeout_s: float | None, model: str | None, checkpoint: str | None, endpoint: str | None, output: str | None,
            env_pairs: tuple[str, ...], log_dir: Path | None, job_file: Path | None, input_uri: str | None,
            custom_attributes: str | None, max_payload_mb: int | None, max_retries: int | None, tasks: int | None,
            parallelism: int | None, batch_args: tuple[str, ...]) -> None:
    """Emulate TARGET's contract and limits (deploy/limits.py) in front of the real server process; a job
    target (sagemaker-batch, cloudrun-job) runs its job once and prints what the platform would describe.
    After --, cloudrun-job's extra `segany batch` arguments (e.g. -- --task everything)."""
    if target in JOB_TARGETS:
        _run_job(target, job_file, input_uri, output, custom_attributes, max_payload_mb, timeout_s, max_retries,
                 max_concurrency, tasks, parallelism, memory_mb, batch_args, _env(model, checkpoint, env_pairs), log_dir)
        return
    if batch_args or any(v is not None for v in (job_file, input_uri, custom_attributes, max_payload_mb, max_retries, tasks,
                                                 parallelism)):
        raise click.UsageError("--job, --input, --custom-attributes, --max-payload-mb, --max-retries, --tasks and "
                               "--parallelism are for sagemaker-batch and cloudrun-job")
    import uvicorn

    from deploy.emulate import build, instance_for

    if target == "sagemaker-realtime" and idle_s is not None:
        click.echo("note: --idle-s ignored: a SageMaker real-time endpoint never scales to zero (billed while idle)", err=True)
        idle_s = None
    if target == "sagemaker-serverless" and memory_mb is not None and memory_mb not in SERVERLESS_MEMORY_MB:
        raise click.UsageError(f"--memory-mb {memory_mb}: SageMaker Serverless offers {', '.join(map(str, SERVERLESS_MEMORY_MB))}")
    logs = log_dir or Path(tempfile.mkdtemp(prefix=f"segany-emulate-{target}-"))
    instance = instance_for(target, _env(model, checkpoint, env_pairs), logs, memory_mb)
    try:
        front = build(target, instance, idle_s=idle_s, timeout_s=timeout_s, max_concurrency=max_concurrency, endpoint=endpoint,
                      output=output)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if timeout_s is not None and target.startswith("sagemaker"):
        click.echo(f"note: SageMaker's invocation timeout is fixed at {front.target.limits.timeout_s:.0f} s; "
                   f"emulating {timeout_s:g} s", err=True)
    if memory_mb is not None:
        instance._cgroup_for()
        click.echo(f"memory: {instance.memory_note}", err=True)
    if not front.target.scales_to_zero:  # real-time: InService before the first request, billed from now
        click.echo("starting the server (a real-time endpoint runs before its first request)...", err=True)
        from deploy.emulate.lifecycle import StartFailed

        try:
            instance.ensure_running(reason="at emulator start")
        except StartFailed as exc:
            instance.close()
            why = "killed for memory (--memory-mb)" if exc.oom else "it did not get ready"
            raise click.ClickException(f"the server did not start: {why}; its log:\n{exc}") from None
    click.echo(f"{target} emulator on http://{host}:{port} (status: /emulator/status; server logs in {logs})", err=True)
    front.on_close = instance.close  # at shutdown: uvicorn re-raises SIGTERM/SIGINT after it, so no finally runs
    try:
        uvicorn.run(front, host=host, port=port, log_level="info", lifespan="on")
    finally:
        instance.close()


def _run_job(target: str, job_file: Path | None, input_uri: str | None, output: str | None, custom_attributes: str | None,
             max_payload_mb: int | None, timeout_s: float | None, max_retries: int | None, max_concurrency: int | None,
             tasks: int | None, parallelism: int | None, memory_mb: int | None, batch_args: tuple[str, ...],
             env: dict[str, str], log_dir: Path | None) -> None:
    import json

    from deploy.emulate import jobs

    try:
        if target == "sagemaker-batch":
            if tasks is not None or parallelism is not None or batch_args:
                raise ValueError("--tasks, --parallelism and extra arguments are cloudrun-job's; sagemaker-batch "
                                 "takes --custom-attributes and --max-concurrency")
            job = jobs.transform_job(job_file, input_uri=input_uri, output_uri=output, custom_attributes=custom_attributes,
                                     max_payload_mb=max_payload_mb, timeout_s=timeout_s, max_retries=max_retries,
                                     max_concurrency=max_concurrency)
        else:
            if custom_attributes is not None or max_payload_mb is not None or max_concurrency is not None:
                raise ValueError("--custom-attributes, --max-payload-mb and --max-concurrency are sagemaker-batch's; "
                                 "cloudrun-job takes the batch arguments after --")
            job = jobs.cloud_run_job(job_file, input_uri=input_uri, output_uri=output, batch_args=batch_args, tasks=tasks,
                                     parallelism=parallelism, timeout_s=timeout_s, max_retries=max_retries,
                                     memory_mb=memory_mb)
        logs = log_dir or Path(tempfile.mkdtemp(prefix=f"segany-emulate-{target}-"))
        click.echo(f"running the {target} job (logs in {logs})...", err=True)
        described, ok = jobs.run(target, job, env, logs, memory_mb)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(described, indent=1, default=str))
    if not ok:
        raise SystemExit(2)
