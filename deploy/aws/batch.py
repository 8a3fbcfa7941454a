"""Batch Transform runs: one job per run of a release, its output under its own prefix, and a
manifest of what ran and failed written beside the results.

A run's job is ``ENDPOINT-RELEASE-NN``: re-running a release whose last job completed changes
nothing; after a failed or stopped job, the next run starts attempt NN+1 (transform job names
are unique forever, API_CreateTransformJob).
"""

from __future__ import annotations

import json
from typing import Any

from deploy.aws.sagemaker import Resolved
from deploy.aws.state import AwsState
from deploy.uris import split_bucket_uri


def job_name_for(r: Resolved, state: AwsState, clients: Any | None) -> tuple[str, bool]:
    """(the job this run uses, whether it already completed)."""
    ours = sorted(j.name for j in state.jobs if j.release == r.release)
    if ours and clients is not None:
        status = clients("sagemaker").describe_transform_job(TransformJobName=ours[-1])["TransformJobStatus"]
        if status in ("Completed", "InProgress"):
            return ours[-1], status == "Completed"
    return f"{r.name}-{len(ours) + 1:02d}", False


def _keys(s3: Any, uri: str) -> list[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"][len(prefix):] for item in page.get("Contents", [])]
    return keys


def write_manifest(r: Resolved, job: str, clients: Any) -> str:
    """``OUTPUT/JOB/manifest.json``: each input and its result (``KEY.out``), or why it has none."""
    s = r.settings
    sm, s3 = clients("sagemaker"), clients("s3")
    described = sm.describe_transform_job(TransformJobName=job)
    output = f"{s.output}/{job}"
    inputs = sorted(_keys(s3, s.input or ""))
    outputs = set(_keys(s3, output))
    manifest = {
        "job": job, "release": r.release, "status": described["TransformJobStatus"],
        "failure_reason": described.get("FailureReason"), "input": s.input, "output": output,
        "task": s.custom_attributes,
        "succeeded": [{"input": key, "output": f"{key}.out"} for key in inputs if f"{key}.out" in outputs],
        "failed": [{"input": key, "reason": described.get("FailureReason") or "no result written"}
                   for key in inputs if f"{key}.out" not in outputs],
    }
    bucket, key = split_bucket_uri(f"{output}/manifest.json", "s3")
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=2).encode(), ContentType="application/json")
    return f"{output}/manifest.json"
