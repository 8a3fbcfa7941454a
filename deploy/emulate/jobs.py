"""``segany emulate sagemaker-batch|cloudrun-job``: build the job from flags (or read the one a
deploy's ``--dry-run`` prints, ``--job FILE``), run it once, answer what the platform's Describe
would. Flags override the file's fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOB_TARGETS = ("sagemaker-batch", "cloudrun-job")


def _load(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = json.loads(path.read_text())
    # a plan's call as printed (`create_transform_job` parameters, or create_job's request.job)
    return data.get("request", {}).get("job", data) if isinstance(data, dict) else {}


def transform_job(path: Path | None, *, input_uri: str | None, output_uri: str | None, custom_attributes: str | None,
                  max_payload_mb: int | None, timeout_s: float | None, max_retries: int | None,
                  max_concurrency: int | None) -> dict[str, Any]:
    job = _load(path)
    job.setdefault("TransformJobName", "emulated-transform-job")
    job.setdefault("BatchStrategy", "SingleRecord")
    if input_uri:
        job["TransformInput"] = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                                 "ContentType": "application/x-image", "SplitType": "None",
                                 **{k: v for k, v in job.get("TransformInput", {}).items() if k not in ("DataSource",)}}
    if output_uri:
        job["TransformOutput"] = {**job.get("TransformOutput", {"Accept": "application/json", "AssembleWith": "None"}),
                                  "S3OutputPath": output_uri}
    if custom_attributes is not None:
        job["Environment"] = {**job.get("Environment", {}), "SEGANY_CUSTOM_ATTRIBUTES": custom_attributes}
    if max_payload_mb is not None:
        job["MaxPayloadInMB"] = max_payload_mb
    if max_concurrency is not None:
        job["MaxConcurrentTransforms"] = max_concurrency
    client = dict(job.get("ModelClientConfig") or {})
    if timeout_s is not None:
        client["InvocationsTimeoutInSeconds"] = int(timeout_s)
    if max_retries is not None:
        client["InvocationsMaxRetries"] = max_retries
    if client:
        job["ModelClientConfig"] = client
    return job


def cloud_run_job(path: Path | None, *, input_uri: str | None, output_uri: str | None, batch_args: tuple[str, ...],
                  tasks: int | None, parallelism: int | None, timeout_s: float | None, max_retries: int | None,
                  memory_mb: int | None) -> dict[str, Any]:
    job = _load(path)
    template = dict(job.get("template") or {})
    task = dict(template.get("template") or {})
    container = dict((task.get("containers") or [{}])[0])
    if input_uri and output_uri:
        container["args"] = ["batch", input_uri, output_uri, *batch_args]
    elif input_uri or output_uri or batch_args:
        raise ValueError("give both --input and --output (the task runs segany batch INPUT OUTPUT)")
    if not container.get("args"):
        raise ValueError("no task to run: give --input and --output, or --job with the job a deploy's --dry-run prints")
    if memory_mb is not None:
        container["resources"] = {"limits": {**(container.get("resources") or {}).get("limits", {}),
                                             "memory": f"{memory_mb}Mi"}}
    task["containers"] = [container]
    if timeout_s is not None:
        task["timeout"] = f"{int(timeout_s)}s"
    if max_retries is not None:
        task["max_retries"] = max_retries
    template["template"] = task
    if tasks is not None:
        template["task_count"] = tasks
    if parallelism is not None:
        template["parallelism"] = parallelism
    return {**job, "template": template}


def run(target: str, job: dict[str, Any], env: dict[str, str], log_dir: Path, memory_mb: int | None) -> tuple[dict, bool]:
    """(the platform's description of the finished job, whether it succeeded)."""
    if target == "sagemaker-batch":
        from deploy.emulate.sagemaker_batch import run_transform_job

        described = run_transform_job(job, env, log_dir, memory_mb=memory_mb)
        return described, described["TransformJobStatus"] == "Completed"
    from deploy.emulate.cloudrun_job import run_execution

    execution = run_execution(job, env, log_dir)
    return execution, execution["failed_count"] == 0
