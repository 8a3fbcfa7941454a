"""SageMaker Batch Transform in the emulator: one transform job, run here over the real server.

The job is CreateTransformJob's request, the very one ``segany deploy aws --mode batch --dry-run``
prints (or built from flags by ``segany emulate sagemaker-batch``). As Batch Transform does
(API_CreateTransformJob.html, API_TransformOutput.html, batch-transform-errors.html):

- the request's ranges are checked first (MaxPayloadInMB 0-100, InvocationsTimeoutInSeconds
  1-3600, InvocationsMaxRetries 0-3) and a job the emulator cannot run (SplitType other than
  None, a ManifestFile, Gzip) is refused naming what it supports;
- the instance starts the image as ``serve`` in batch mode, with the request's ``Environment``
  (SEGANY_CUSTOM_ATTRIBUTES: Batch Transform sends no CustomAttributes header), and its start is
  measured (billed: the job's time runs from TransformStartTime to TransformEndTime);
- ``GET /execution-parameters`` is asked, as SageMaker does, and its answer used for what the
  request leaves unset;
- every object under the S3 prefix is one record (SplitType None): over MaxPayloadInMB it fails
  without reaching the container; otherwise it is POSTed to ``/invocations`` with the input's
  ContentType and the output's Accept, within InvocationsTimeoutInSeconds, retried up to
  InvocationsMaxRetries, MaxConcurrentTransforms at a time;
- each success is written to ``S3OutputPath/<key below the prefix>.out``; a failed object gets
  no output, a ``[sagemaker logs]`` line names it, and the job ends Failed ("ClientError: See job
  logs for more information" for the container's 4xx and the payload cap, "AlgorithmError: ..."
  for its 5xx, a timeout or a crash), as the DescribeTransformJob it returns says.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploy.emulate.lifecycle import Instance, StartFailed
from deploy.limits import (BATCH_DEFAULTS, BATCH_INVOCATION_RETRIES, BATCH_INVOCATION_TIMEOUT_S,
                           BATCH_MAX_PAYLOAD_MB, STARTUP_TIMEOUT_S)

logger = logging.getLogger(__name__)

DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html"
DEFAULT_PAYLOAD_MB = BATCH_DEFAULTS["MaxPayloadInMB"]
DEFAULT_TIMEOUT_S = BATCH_DEFAULTS["InvocationsTimeoutInSeconds"]
DEFAULT_RETRIES = BATCH_DEFAULTS["InvocationsMaxRetries"]


@dataclass
class Record:
    key: str  # below the input prefix
    bytes: int
    ok: bool
    status: int | None
    seconds: float
    attempts: int
    log: str = ""  # the [sagemaker logs] line of a failure


def check_job(job: dict[str, Any]) -> list[str]:
    """What CreateTransformJob (or this emulator) refuses in ``job``; empty when it runs."""
    problems = []
    payload = job.get("MaxPayloadInMB")
    if payload is not None and not BATCH_MAX_PAYLOAD_MB[0] <= payload <= BATCH_MAX_PAYLOAD_MB[1]:
        problems.append(f"MaxPayloadInMB {payload}: {BATCH_MAX_PAYLOAD_MB[0]}-{BATCH_MAX_PAYLOAD_MB[1]} ({DOC})")
    client = job.get("ModelClientConfig") or {}
    timeout = client.get("InvocationsTimeoutInSeconds")
    if timeout is not None and not BATCH_INVOCATION_TIMEOUT_S[0] <= timeout <= BATCH_INVOCATION_TIMEOUT_S[1]:
        problems.append(f"InvocationsTimeoutInSeconds {timeout}: {BATCH_INVOCATION_TIMEOUT_S[0]}-"
                        f"{BATCH_INVOCATION_TIMEOUT_S[1]} (API_ModelClientConfig.html)")
    retries = client.get("InvocationsMaxRetries")
    if retries is not None and not BATCH_INVOCATION_RETRIES[0] <= retries <= BATCH_INVOCATION_RETRIES[1]:
        problems.append(f"InvocationsMaxRetries {retries}: {BATCH_INVOCATION_RETRIES[0]}-{BATCH_INVOCATION_RETRIES[1]} "
                        "(API_ModelClientConfig.html)")
    if job.get("BatchStrategy", "SingleRecord") not in ("SingleRecord", "MultiRecord"):
        problems.append(f"BatchStrategy {job['BatchStrategy']!r}: SingleRecord or MultiRecord ({DOC})")
    source = ((job.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
    if not str(source.get("S3Uri", "")).startswith("s3://"):
        problems.append(f"TransformInput.DataSource.S3DataSource.S3Uri must be an s3:// prefix ({DOC})")
    if source.get("S3DataType", "S3Prefix") != "S3Prefix":
        problems.append("S3DataType ManifestFile: the emulator reads an S3Prefix only")
    split = (job.get("TransformInput") or {}).get("SplitType", "None")
    if split != "None":
        problems.append(f"SplitType {split!r}: the emulator runs SplitType None only (a SAM input is one whole image)")
    if (job.get("TransformInput") or {}).get("CompressionType", "None") != "None":
        problems.append("CompressionType Gzip: the emulator reads uncompressed objects only")
    if not str((job.get("TransformOutput") or {}).get("S3OutputPath", "")).startswith("s3://"):
        problems.append(f"TransformOutput.S3OutputPath must be an s3:// path ({DOC})")
    return problems


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _execution_parameters(instance: Instance) -> dict[str, Any]:
    import httpx

    try:
        answer = httpx.get(f"{instance.url}/execution-parameters", timeout=10)
        return answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


def _invoke(instance: Instance, data: bytes, content_type: str, accept: str, timeout_s: float) -> tuple[int | None, bytes, str]:
    """(status, body, what went wrong) of one POST /invocations; status None on a timeout or a crash."""
    import httpx

    try:
        answer = httpx.post(f"{instance.url}/invocations", content=data, timeout=timeout_s,
                            headers={"Content-Type": content_type, "Accept": accept})
    except httpx.TimeoutException:
        return None, b"", f"Model server did not respond to /invocations request within {timeout_s:g} seconds"
    except httpx.HTTPError as exc:
        died = instance.died()
        why = "the container was killed for memory (OOM)" if died == "oom" else f"the container did not answer ({exc})"
        return None, b"", why
    return answer.status_code, answer.content, ""


def run_transform_job(job: dict[str, Any], env: dict[str, str], log_dir: Path, *, memory_mb: int | None = None,
                      s3: Any = None) -> dict[str, Any]:
    """Run ``job`` (CreateTransformJob's request) and answer what DescribeTransformJob would, plus
    ``Emulator``: the instance's measured start, one entry per record and the ``[sagemaker logs]``."""
    problems = check_job(job)
    if problems:
        raise ValueError("; ".join(problems))
    if s3 is None:
        import boto3

        s3 = boto3.session.Session().client("s3")
    name = job.get("TransformJobName", "emulated-transform-job")
    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, prefix = _split(source)
    out_bucket, out_prefix = _split(job["TransformOutput"]["S3OutputPath"])
    content_type = job["TransformInput"].get("ContentType", "application/octet-stream")
    accept = job["TransformOutput"].get("Accept", "application/json")
    client = job.get("ModelClientConfig") or {}
    logs: list[str] = []
    instance = Instance("sagemaker", {**env, **(job.get("Environment") or {})}, log_dir, memory_mb,
                        sagemaker_mode="batch", ready_timeout_s=STARTUP_TIMEOUT_S[1])
    started, start_clock = _now(), time.perf_counter()
    describe: dict[str, Any] = {**job, "TransformJobName": name, "TransformStartTime": started}
    records: list[Record] = []
    try:
        try:
            launch_s = instance.ensure_running(reason="transform job start")
        except StartFailed as exc:
            why = "killed for memory" if exc.oom else "did not answer /ping"
            return {**describe, "TransformJobStatus": "Failed", "TransformEndTime": _now(),
                    "FailureReason": f"AlgorithmError: the container {why}; see job logs for more information",
                    "Emulator": {"instance_start_s": None, "records": [], "logs": [str(exc)[-1000:]],
                                 "billed_s": time.perf_counter() - start_clock}}
        asked = _execution_parameters(instance)
        payload_mb = job.get("MaxPayloadInMB", asked.get("MaxPayloadInMB", DEFAULT_PAYLOAD_MB))
        concurrency = job.get("MaxConcurrentTransforms") or asked.get("MaxConcurrentTransforms") or 1
        timeout_s = client.get("InvocationsTimeoutInSeconds", DEFAULT_TIMEOUT_S)
        retries = client.get("InvocationsMaxRetries", DEFAULT_RETRIES)
        logs.append(f"{_now()}:[sagemaker logs]: MaxConcurrentTransforms={concurrency}, MaxPayloadInMB={payload_mb}, "
                    f"BatchStrategy={job.get('BatchStrategy', 'SingleRecord').upper()}")
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [(item["Key"], item["Size"]) for item in page.get("Contents", []) if not item["Key"].endswith("/")]

        def one(key: str, size: int) -> Record:
            below = key[len(prefix):].lstrip("/") if prefix else key
            t0 = time.perf_counter()
            if payload_mb and size > payload_mb * 2**20:
                return Record(below, size, False, None, 0.0, 0, f"{bucket}/{key}: Too much data for max payload size "
                              f"({size} bytes over MaxPayloadInMB={payload_mb})")
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            status, why, attempts = None, "", 0
            for attempts in range(1, retries + 2):
                if not instance.running():
                    instance.ensure_running(reason="after a crash")
                status, body, why = _invoke(instance, data, content_type, accept, timeout_s)
                if status is not None and status < 400:
                    s3.put_object(Bucket=out_bucket, Key=f"{out_prefix.rstrip('/') + '/' if out_prefix else ''}{below}.out",
                                  Body=body)
                    return Record(below, size, True, status, time.perf_counter() - t0, attempts)
                if status is not None and status < 500:
                    why = f"ClientError: {status}"
                    break  # the container refused this input: a retry gets the same answer
            return Record(below, size, False, status, time.perf_counter() - t0, attempts, f"{bucket}/{key}: {why or status}")

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            records = list(pool.map(lambda ks: one(*ks), keys))
        logs += [f"{_now()}:[sagemaker logs]: {r.log}" for r in records if not r.ok]
        failed = [r for r in records if not r.ok]
        describe.update(TransformJobStatus="Failed" if failed else "Completed", TransformEndTime=_now())
        if failed:
            client_error = all(r.status is not None and r.status < 500 or "max payload" in r.log for r in failed)
            describe["FailureReason"] = ("ClientError" if client_error else "AlgorithmError") + \
                ": See job logs for more information"
        describe["Emulator"] = {"instance_start_s": launch_s, "records": [asdict(r) for r in records], "logs": logs,
                                "billed_s": time.perf_counter() - start_clock, "memory": instance.memory_note}
        (log_dir / f"{name}.log").write_text("\n".join(logs) + "\n")
        return describe
    finally:
        instance.close()
