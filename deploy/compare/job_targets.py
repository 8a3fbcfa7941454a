"""``segany compare``'s job targets: ``sagemaker-batch`` and ``cloudrun-job``, the ways the seed article
tried to avoid an always-on endpoint. A job has no session: each planned request is one job (the
interactive use: every click waits for a job), run by the job emulators (``deploy.emulate``), so
its latency is the job's whole time, the instance's start included, and a prompt on an image seen
before resends the image (no ``image_id`` across jobs).

- sagemaker-batch: the image under its own S3 prefix (moto), a transform job with the prompts in
  SEGANY_CUSTOM_ATTRIBUTES and ``segany deploy aws``'s MaxPayloadInMB and invocation timeout;
- cloudrun-job: the image in its own folder, one task of ``segany batch`` with the prompts as flags.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from deploy.compare.clients import MotoS3, fields_for

JOB_TARGETS = ("sagemaker-batch", "cloudrun-job")
PER_JOB = "a job per request (the answer when the job ends)"


def _transform_job(n: int, bucket: str, attributes: str) -> dict[str, Any]:
    """The job ``segany emulate sagemaker-batch`` would build from its flags, with ``segany deploy aws``'s
    MaxPayloadInMB and invocation timeout, one retry."""
    from deploy.aws.settings import AwsSettings
    from deploy.emulate.jobs import transform_job

    defaults = AwsSettings.model_fields
    job = transform_job(None, input_uri=f"s3://{bucket}/in/{n}/", output_uri=f"s3://{bucket}/out/{n}/",
                        custom_attributes=attributes, max_payload_mb=defaults["max_payload_mb"].default,
                        timeout_s=defaults["invocations_timeout_s"].default, max_retries=1, max_concurrency=1)
    return {**job, "TransformJobName": f"compare-{n}"}


def _batch_cause(record: dict[str, Any]) -> str:
    text = record.get("log", "").lower()
    if "max payload" in text:
        return "payload limit"
    if "did not respond" in text:
        return "timeout"
    if "memory" in text:
        return "memory"
    return "container error"


def _cloud_run_job(image: Path, out: Path, fields: dict[str, Any], model: str) -> dict[str, Any]:
    """The job ``segany emulate cloudrun-job`` would build from its flags: one task of ``segany batch``
    with ``segany deploy gcp``'s memory for ``model``, no retry."""
    from deploy.emulate.cloudrun_job import memory_mib
    from deploy.emulate.jobs import cloud_run_job
    from deploy.gcp.settings import DEFAULT_RESOURCES

    args = ["--task", fields["task"], "--model", model]
    if fields["task"] == "segment":
        args += ["--points", json.dumps(fields["points"]), "--labels", json.dumps(fields["labels"])]
    else:
        args += ["--options", json.dumps({"points_per_side": fields["points_per_side"]})]
    return cloud_run_job(None, input_uri=str(image.parent), output_uri=str(out), batch_args=tuple(args), tasks=1,
                         parallelism=1, timeout_s=None, max_retries=0, memory_mb=memory_mib(DEFAULT_RESOURCES[model][1]))


def run_jobs(target: str, paths: dict[str, Path], planned: list[Any], env: dict[str, str], work_dir: Path, *,
             model: str, points_per_side: int, point_of: Callable[[Path], list[int]],
             on_request: Callable[[Any], None] | None = None) -> Any:
    """``target``'s run (a TargetRun), every planned request as one job, with the platform's limits."""
    from dataclasses import asdict

    from deploy.compare.runner import TargetRun
    from deploy.limits import CLOUD_RUN, CLOUD_RUN_JOB_TASK_TIMEOUT_S, SAGEMAKER

    if target == "sagemaker-batch":
        limits = {**asdict(SAGEMAKER["batch"]), "timeout_s": SAGEMAKER["batch"].timeout_s}
    else:
        limits = {"name": "Cloud Run job", "request_bytes": None, "response_bytes": None, "memory_mb": CLOUD_RUN.memory_mb,
                  "timeout_s": CLOUD_RUN_JOB_TASK_TIMEOUT_S, "source": "https://cloud.google.com/run/docs/create-jobs"}
    run = TargetRun(target, limits={**limits, "scales_to_zero": True, "billing": "while the job runs"})
    run_job_target(target, run, paths, planned, env, work_dir, model=model, points_per_side=points_per_side,
                   point_of=point_of, on_request=on_request)
    return run


def run_job_target(target: str, run: Any, paths: dict[str, Path], planned: list[Any], env: dict[str, str],
                   work_dir: Path, *, model: str, points_per_side: int, point_of: Callable[[Path], list[int]],
                   on_request: Callable[[Any], None] | None = None) -> None:
    """Every planned request as one job on ``target``'s emulator; records appended to ``run``."""
    from deploy.aws.invoke import _attributes
    from deploy.compare.runner import RequestRecord
    from deploy.compare.workload import image_sizes

    sizes = image_sizes(paths)
    s3 = MotoS3() if target == "sagemaker-batch" else None
    seen: set[str] = set()
    started = time.monotonic()
    try:
        if s3 is not None:
            s3.__enter__()
        for n, p in enumerate(planned):
            fields = fields_for("everything" if p.kind == "everything" else "point", None, point_of(paths[p.image]),
                                points_per_side)
            workaround = PER_JOB + ("; image resent: no image_id across jobs" if p.image in seen else "")
            seen.add(p.image)
            logs = work_dir / "logs" / target / f"job-{n}"
            t0 = time.perf_counter()
            if s3 is not None:
                from deploy.emulate.sagemaker_batch import run_transform_job

                s3.client.put_object(Bucket=s3.bucket, Key=f"in/{n}/{paths[p.image].name}", Body=paths[p.image].read_bytes())
                described = run_transform_job(_transform_job(n, s3.bucket, _attributes(fields)), env, logs)
                ok = described["TransformJobStatus"] == "Completed"
                records = described["Emulator"]["records"]
                cold = described["Emulator"]["instance_start_s"]
                cause = None if ok else (_batch_cause(records[0]) if records else "container error")
                detail = "" if ok else f"{described.get('FailureReason', '')}: {records[0]['log'] if records else ''}"[:300]
                status = records[0]["status"] if records else None
            else:
                from deploy.emulate.cloudrun_job import run_execution

                folder = work_dir / "jobs" / str(n)
                (folder / "in").mkdir(parents=True, exist_ok=True)
                image = shutil.copy(paths[p.image], folder / "in" / paths[p.image].name)
                execution = run_execution(_cloud_run_job(Path(image), folder / "out", fields, model), env, logs,
                                          name="compare", execution=f"compare-{n}")
                ok = execution["failed_count"] == 0
                reason = execution["tasks"][0]["attempts"][-1]["reason"]
                cold, status = None, None
                cause = None if ok else ("timeout" if "timeout" in reason else "memory" if "Memory" in reason
                                         else "container error")
                detail = "" if ok else reason[:300]
            latency = time.perf_counter() - t0
            record = RequestRecord(target, p.session, p.kind, p.image, sizes[p.image], ok, status, latency, cause, detail,
                                   workaround, cold)
            if cold is not None:
                run.cold_starts.append({"at": time.time(), "seconds": cold, "reason": "job start"})
            if run.first_response_s is None:
                run.first_response_s = latency
            run.busy_s += latency
            run.records.append(record)
            if on_request:
                on_request(record)
    finally:
        if s3 is not None:
            s3.__exit__(None, None, None)
    run.wall_s = time.monotonic() - started
    run.note = ("each request is a transform job: the instance starts, answers one object, stops" if target == "sagemaker-batch"
                else "each request is a job execution of one task: the task loads the model, answers one image, exits")
