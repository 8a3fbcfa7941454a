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
    from deploy.aws.settings import AwsSettings

    defaults = AwsSettings.model_fields
    return {"TransformJobName": f"compare-{n}", "MaxConcurrentTransforms": 1, "BatchStrategy": "SingleRecord",
            "MaxPayloadInMB": defaults["max_payload_mb"].default,
            "ModelClientConfig": {"InvocationsTimeoutInSeconds": defaults["invocations_timeout_s"].default,
                                  "InvocationsMaxRetries": 1},
            "Environment": {"SEGANY_CUSTOM_ATTRIBUTES": attributes},
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/{n}/"}},
                               "ContentType": "application/x-image", "SplitType": "None"},
            "TransformOutput": {"S3OutputPath": f"s3://{bucket}/out/{n}/", "Accept": "application/json"}}


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
    from deploy.gcp.settings import DEFAULT_RESOURCES

    args = ["batch", str(image.parent), str(out), "--task", fields["task"], "--model", model]
    if fields["task"] == "segment":
        args += ["--points", json.dumps(fields["points"]), "--labels", json.dumps(fields["labels"])]
    else:
        args += ["--options", json.dumps({"points_per_side": fields["points_per_side"]})]
    memory = DEFAULT_RESOURCES[model][1]
    return {"template": {"task_count": 1, "parallelism": 1, "template": {
        "containers": [{"command": ["segany"], "args": args, "resources": {"limits": {"memory": memory}}}],
        "max_retries": 0, "timeout": "600s"}}}


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
