"""``segany batch INPUT OUTPUT``: every image under INPUT through the pipeline, in process, one
result per image under OUTPUT; what a Cloud Run job's tasks run (``segany deploy gcp --job``),
and the same locally.

- INPUT and OUTPUT: a folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``; images are the
  .jpg/.jpeg/.png/.webp under INPUT, in sorted order.
- Sharding as Cloud Run does it: task ``i`` of ``n`` (``CLOUD_RUN_TASK_INDEX`` /
  ``CLOUD_RUN_TASK_COUNT``, or ``--task-index`` / ``--tasks``) takes the images at positions
  ``p % n == i``.
- ``OUTPUT/<image's path>.json`` holds what the HTTP API answers (``.npy`` for embed, ``.png`` for
  the overlay); a result already there is skipped, so a rerun finishes what a failed run left.
- ``OUTPUT/_manifest/task-I-of-N.json``: what the task took, wrote, skipped and why any failed;
  :func:`merge_manifests` (``segany batch --merge OUTPUT``) joins them into ``OUTPUT/_manifest.json``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.errors import ConfigError, SegAnyError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MANIFESTS = "_manifest"
TASKS = ("everything", "segment", "embed")


class Store:
    """A folder, or an S3 / GCS prefix: list, read, write, exists, by key relative to the root."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        if self.scheme not in ("file", "s3", "gs"):
            raise ConfigError(f"{uri}: give a folder, s3://bucket/prefix or gs://bucket/prefix")
        if self.scheme == "file":
            self.root = Path(uri)
        else:
            self.bucket, _, prefix = uri.split("://", 1)[1].partition("/")
            self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
            self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            if self.scheme == "s3":
                import boto3

                self._client = boto3.session.Session().client("s3")
            else:
                from deploy.gcp.gcs import _client as gcs_client

                self._client = gcs_client().bucket(self.bucket)
        return self._client

    def list(self) -> list[str]:
        if self.scheme == "file":
            if not self.root.is_dir():
                raise ConfigError(f"{self.uri} is not a folder")
            return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        if self.scheme == "s3":
            keys = [o["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
                    for o in page.get("Contents", [])]
        else:
            keys = [b.name for b in self.client.list_blobs(prefix=self.prefix)]
        return sorted(k[len(self.prefix):] for k in keys)

    def read(self, key: str) -> bytes:
        if self.scheme == "file":
            return (self.root / key).read_bytes()
        if self.scheme == "s3":
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        return self.client.blob(self.prefix + key).download_as_bytes()

    def write(self, key: str, data: bytes, content_type: str) -> None:
        if self.scheme == "file":
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")  # a task killed mid-write leaves no result behind
            partial.write_bytes(data)
            partial.replace(path)
        elif self.scheme == "s3":
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type)
        else:
            self.client.blob(self.prefix + key).upload_from_string(data, content_type=content_type)

    def exists(self, key: str) -> bool:
        if self.scheme == "file":
            return (self.root / key).is_file()
        if self.scheme == "s3":
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
                return True
            except Exception as exc:
                if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return self.client.blob(self.prefix + key).exists()


@dataclass(frozen=True)
class BatchSpec:
    input: str
    output: str
    task: str = "everything"
    fields: dict[str, Any] = field(default_factory=dict)  # the request's other fields (points, output, ...)
    task_index: int = 0
    task_count: int = 1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task}: one of {', '.join(TASKS)}")
        if not 0 <= self.task_index < self.task_count:
            raise ConfigError(f"task index {self.task_index} of {self.task_count}: 0 <= index < count")

    @classmethod
    def sharded_from_env(cls, input: str, output: str, task: str, fields: dict[str, Any],
                         index: int | None, count: int | None, env: dict[str, str] | None = None) -> "BatchSpec":
        env = dict(os.environ) if env is None else env
        try:
            index = index if index is not None else int(env.get("CLOUD_RUN_TASK_INDEX", 0))
            count = count if count is not None else int(env.get("CLOUD_RUN_TASK_COUNT", 1))
        except ValueError:
            raise ConfigError("CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT must be whole numbers") from None
        return cls(input, output, task, fields, index, count)

    def result_key(self, image: str) -> str:
        if self.task == "embed":
            return image + ".npy"
        return image + (".png" if self.fields.get("output") == "overlay" else ".json")


def shard(images: list[str], index: int, count: int) -> list[str]:
    return [key for position, key in enumerate(images) if position % count == index]


def images_under(store: Store) -> list[str]:
    return [key for key in store.list() if key.lower().endswith(IMAGE_SUFFIXES) and not key.startswith(MANIFESTS)]


async def _answer(pipeline: Any, spec: BatchSpec, image: bytes) -> tuple[bytes, str]:
    """What the HTTP API would answer for this image: (body, content type)."""
    from runners.schemas import EmbedRequest, EverythingRequest, SegmentRequest

    async def encode_batch(tickets: list[str]) -> list[str]:
        return await asyncio.to_thread(pipeline.encode_staged, tickets)

    payload = {**spec.fields, "image": base64.b64encode(image).decode()}
    if spec.task == "embed":
        body, _headers = await pipeline.embed(EmbedRequest(**payload), encode_batch, npy=True)
        return body, "application/x-npy"
    if spec.task == "segment":
        response, png = await pipeline.segment(SegmentRequest(**payload), encode_batch)
    else:
        response, png = await pipeline.everything(EverythingRequest(**payload), encode_batch)
    if png is not None:
        return png, "image/png"
    return response.model_dump_json().encode(), "application/json"


def run_batch(spec: BatchSpec, pipeline: Any, progress: Any = None) -> dict[str, Any]:
    """Run this task's share; return (and write) its manifest."""
    source, target = Store(spec.input), Store(spec.output)
    taken = shard(images_under(source), spec.task_index, spec.task_count)
    manifest: dict[str, Any] = {"input": spec.input, "output": spec.output, "task": spec.task, "fields": spec.fields,
                                "task_index": spec.task_index, "task_count": spec.task_count, "taken": taken,
                                "succeeded": [], "skipped": [], "failed": [], "started": time.time()}
    bar = progress.add_task("segany batch", total=len(taken)) if progress is not None else None
    for key in taken:
        if progress is not None:
            progress.update(bar, description=f"segany batch: {key}")
        result = spec.result_key(key)
        if target.exists(result):
            manifest["skipped"].append({"input": key, "output": result})
        else:
            started = time.perf_counter()
            try:
                body, content_type = asyncio.run(_answer(pipeline, spec, source.read(key)))
                target.write(result, body, content_type)
                manifest["succeeded"].append({"input": key, "output": result, "seconds": round(time.perf_counter() - started, 3)})
            except SegAnyError as exc:
                manifest["failed"].append({"input": key, "code": exc.code, "message": exc.message})
                logger.warning("%s failed: %s", key, exc.message)
        if progress is not None:
            progress.advance(bar)
    manifest["finished"] = time.time()
    name = f"{MANIFESTS}/task-{spec.task_index}-of-{spec.task_count}.json"
    target.write(name, json.dumps(manifest, indent=2).encode(), "application/json")
    manifest["manifest"] = f"{target.uri}/{name}"
    return manifest


def merge_manifests(output: str) -> dict[str, Any]:
    """Join the task manifests under OUTPUT into ``OUTPUT/_manifest.json``."""
    store = Store(output)
    parts = [json.loads(store.read(key)) for key in store.list() if key.startswith(MANIFESTS + "/task-")]
    merged: dict[str, Any] = {"output": output, "tasks": len(parts)}
    for part_key in ("taken", "succeeded", "skipped", "failed"):
        merged[part_key] = [item for part in parts for item in part[part_key]]
    store.write(f"{MANIFESTS}.json", json.dumps(merged, indent=2).encode(), "application/json")
    return merged


def load_pipeline(settings: Any) -> Any:
    from runners.pipeline import Pipeline

    pipeline = Pipeline(settings)
    pipeline.load()
    return pipeline
