"""``segany batch INPUT OUTPUT`` (docs/batch.md): every image under INPUT (a folder, ``s3://`` or
``gs://`` prefix) through the pipeline in process, one result per image under OUTPUT, named after it
and holding what the HTTP API answers; sharded as Cloud Run job tasks are, resumable, with a manifest
per task (``OUTPUT/_manifest/task-I-of-N.json``) that :func:`merge_manifests` joins.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from runners.errors import ConfigError, PayloadTooLarge, SegAnyError
from deploy.aws.s3 import S3_NO_KEY, error_of

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MANIFESTS = "_manifest"
TASKS = ("everything", "segment", "embed")
READ_TIMEOUT_S = 60.0


class LocalStore:
    """A folder; keys (here and in BucketStore) are '/'-separated paths relative to it."""

    def __init__(self, path: str) -> None:
        self.root = Path(path)
        self.uri = path.rstrip("/") or "/"

    def list(self, missing_ok: bool = False) -> list[str]:
        if not self.root.is_dir():
            if missing_ok and not self.root.exists():
                return []
            raise ConfigError(f"{self.uri} is not a folder")
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read(self, key: str, max_bytes: int) -> bytes:
        path = self.root / key
        if path.stat().st_size > max_bytes:
            raise PayloadTooLarge(f"{path} is more than the {max_bytes}-byte limit; raise SEGANY_MAX_BODY_MB.")
        return path.read_bytes()

    def write(self, key: str, data: bytes, content_type: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")  # a task killed mid-write leaves no result behind
        partial.write_bytes(data)
        partial.replace(path)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()


class BucketStore:
    """``s3://`` through deploy/aws/s3.py's client and reads (boto3), ``gs://`` through
    deploy/gcp/gcs.py's (google-cloud-storage); the SDK is imported on first use."""

    def __init__(self, uri: str) -> None:
        self.scheme, rest = uri.split("://", 1)
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise ConfigError(f"{uri} names no bucket; use {self.scheme}://bucket/prefix")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")
        self._client: Any = None

    @property
    def sdk(self) -> Any:  # the module with _client, _describe and read_object
        from deploy.aws import s3
        from deploy.gcp import gcs

        return s3 if self.scheme == "s3" else gcs

    @property
    def client(self) -> Any:  # S3: a boto3 client; GCS: the bucket
        if self._client is None:
            self._client = (self.sdk._client(connect_timeout=10.0, read_timeout=60.0, attempts=5)
                            if self.scheme == "s3" else self.sdk._client().bucket(self.bucket))
        return self._client

    def list(self, missing_ok: bool = False) -> list[str]:
        try:
            if self.scheme == "s3":
                pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
                keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            else:
                keys = [b.name for b in self.client.list_blobs(prefix=self.prefix)]
        except SegAnyError:
            raise
        except Exception as exc:  # botocore / google-api-core: no bucket, no access, no credentials
            raise ConfigError(f"listing {self.uri} failed: {self.sdk._describe(exc, self.uri)}") from None
        return sorted(k[len(self.prefix):] for k in keys if len(k) > len(self.prefix))

    def read(self, key: str, max_bytes: int) -> bytes:  # URLFetchFailed / PayloadTooLarge, as image_url's reads
        uri = f"{self.scheme}://{self.bucket}/{self.prefix}{key}"
        return self.sdk.read_object(uri, max_bytes=max_bytes, timeout_s=READ_TIMEOUT_S)

    def write(self, key: str, data: bytes, content_type: str) -> None:
        if self.scheme == "s3":
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type)
        else:
            self.client.blob(self.prefix + key).upload_from_string(data, content_type=content_type)

    def exists(self, key: str) -> bool:
        if self.scheme == "gs":
            return bool(self.client.blob(self.prefix + key).exists())
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except Exception as exc:
            if error_of(exc).get("Code") in S3_NO_KEY:
                return False
            raise


def open_store(uri: str) -> LocalStore | BucketStore:
    """A folder (a path or ``file://``), ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() == "file":
        return LocalStore(rest if sep else uri)
    if scheme.lower() in ("s3", "gs"):
        return BucketStore(f"{scheme.lower()}://{rest}")
    raise ConfigError(f"{uri}: unknown scheme {scheme}://; give a folder, s3://bucket/prefix or gs://bucket/prefix")


@dataclass(frozen=True)
class BatchSpec:
    """One task's work. ``fields``: the request's fields other than the image (points, output, ...),
    checked as the API checks a request body, before any image is read or model loaded."""

    input: str
    output: str
    task: str = "everything"
    fields: dict[str, Any] = field(default_factory=dict)
    task_index: int = 0
    task_count: int = 1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task}: use one of {', '.join(TASKS)}")
        if self.task_count < 1 or not 0 <= self.task_index < self.task_count:
            raise ConfigError(f"task index {self.task_index} of {self.task_count} tasks: need 0 <= index < count")
        if {"image", "image_id", "image_url"} & set(self.fields):
            raise ConfigError("the images come from INPUT: the options must not set image, image_id or image_url")
        open_store(self.input), open_store(self.output)
        self.request_for(b"")

    @classmethod
    def sharded_from_env(cls, input: str, output: str, task: str, fields: dict[str, Any], index: int | None,
                         count: int | None, env: Mapping[str, str] | None = None) -> "BatchSpec":
        """Index and count from the arguments, else CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT (0 / 1)."""
        env = os.environ if env is None else env
        try:
            index = index if index is not None else int(env.get("CLOUD_RUN_TASK_INDEX") or 0)
            count = count if count is not None else int(env.get("CLOUD_RUN_TASK_COUNT") or 1)
        except ValueError:
            raise ConfigError("CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT must be whole numbers") from None
        return cls(input, output, task, fields, index, count)

    def request_for(self, image: bytes) -> Any:
        """The API request (runners/schemas.py) for this image; ConfigError when the fields do not validate."""
        from pydantic import ValidationError

        from runners.schemas import EmbedRequest, EverythingRequest, SegmentRequest

        model = {"embed": EmbedRequest, "segment": SegmentRequest, "everything": EverythingRequest}[self.task]
        try:
            return model(**self.fields, image=base64.b64encode(image).decode() or "-")
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg'].removeprefix('Value error, ')}"
                                 for e in exc.errors())
            raise ConfigError(f"--task {self.task} with {json.dumps(self.fields)}: {problems}") from None

    def result_key(self, image: str) -> str:
        if self.task == "embed":
            return image + ".npy"
        return image + (".png" if self.fields.get("output") == "overlay" else ".json")

    @property
    def manifest_key(self) -> str:
        return f"{MANIFESTS}/task-{self.task_index}-of-{self.task_count}.json"


def shard(images: list[str], index: int, count: int) -> list[str]:
    """Cloud Run's split: the images at positions p with p % count == index."""
    return [key for position, key in enumerate(images) if position % count == index]


def images_under(source: LocalStore | BucketStore) -> list[str]:
    """The image keys under ``source``, sorted; not ``IMAGE.jpg.png``, an overlay result of this
    runner (when OUTPUT lies inside INPUT), nor anything under ``_manifest/``."""
    return [key for key in source.list() if key.lower().endswith(IMAGE_SUFFIXES) and not key.startswith(MANIFESTS + "/")
            and not (key.lower().endswith(".png") and key[:-4].lower().endswith(IMAGE_SUFFIXES))]


async def _answer(pipeline: Any, spec: BatchSpec, image: bytes) -> tuple[bytes, str, dict[str, Any]]:
    """What the HTTP API answers for this image: (body, content type, what /embed's .npy headers say)."""

    async def encode_batch(tickets: list[str]) -> list[str]:  # the service's batchable API, without BentoML
        return await asyncio.to_thread(pipeline.encode_staged, tickets)

    request = spec.request_for(image)
    try:
        if spec.task == "embed":
            body, headers = await pipeline.embed(request, encode_batch, npy=True)
            meta = {name.removeprefix("x-segany-").replace("-", "_"): value for name, value in headers.items()}
            meta.update({k: [int(v) for v in meta[k].split(",")] for k in ("original_size", "input_size")})
            return body, "application/x-npy", meta
        response, png = await (pipeline.segment if spec.task == "segment" else pipeline.everything)(request, encode_batch)
        return (png, "image/png", {}) if png is not None else (response.model_dump_json().encode(), "application/json", {})
    finally:  # the pipeline takes the embedding as soon as it is delivered: let its encoder calls end in this run
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)


def _one(pipeline: Any, spec: BatchSpec, source: LocalStore | BucketStore, target: LocalStore | BucketStore, key: str,
         result: str, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """Read, answer and write one image: its ``succeeded`` entry, or its ``failed`` one (with ``code``)."""
    started = time.perf_counter()
    try:
        image = source.read(key, pipeline.settings.max_body_bytes)
        body, content_type, meta = loop.run_until_complete(_answer(pipeline, spec, image))
        target.write(result, body, content_type)
        return {"input": key, "output": result, "seconds": round(time.perf_counter() - started, 3), **meta}
    except SegAnyError as exc:  # the API's error: its code and message
        code, message = exc.code, exc.message
    except Exception as exc:  # noqa: BLE001 - a store's or an unexpected error: still the image's, not the task's
        logger.debug("%s failed", key, exc_info=True)
        code, message = "internal_error", f"{type(exc).__name__}: {exc}"
    return {"input": key, "code": code, "message": message, "seconds": round(time.perf_counter() - started, 3)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _settings(settings: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings), default=str)) if settings is not None else {}


def run_batch(spec: BatchSpec, pipeline: Any, progress: Any = None, *, settings: Any = None) -> dict[str, Any]:
    """Run this task's share; write its manifest and return it (plus ``manifest``: where it is).

    pipeline: a loaded runners.pipeline.Pipeline, or a callable returning one, called when the first
    image is left to compute (``functools.cache(lambda: load_pipeline(settings))`` for one model per
    process). progress: a rich Progress, or None. settings: for the manifest while no model is loaded.
    Raises ConfigError when INPUT or OUTPUT cannot be listed or INPUT holds no image; an image that
    fails is a ``failed`` entry of the manifest.
    """
    started, clock = _now(), time.perf_counter()
    source, target = open_store(spec.input), open_store(spec.output)
    images = images_under(source)
    if not images:
        raise ConfigError(f"no {', '.join(IMAGE_SUFFIXES)} image under {spec.input}")
    taken = shard(images, spec.task_index, spec.task_count)
    present = set(target.list(missing_ok=True)) if taken else set()
    loaded = pipeline is not None and not callable(pipeline)
    manifest: dict[str, Any] = {
        "version": 1, "input": spec.input, "output": spec.output, "task": spec.task, "request": spec.fields,
        "task_index": spec.task_index, "task_count": spec.task_count, "images": len(images), "taken": taken,
        "succeeded": [], "skipped": [], "failed": [], "model": pipeline.model_name if loaded else None,
        "settings": _settings(pipeline.settings if loaded else settings),
    }
    timings = {"started": started, "list_s": round(time.perf_counter() - clock, 3), "load_s": 0.0}
    loop = asyncio.new_event_loop()  # one loop per task: the pipeline's limiter and locks bind to it
    bar = progress.add_task("segany batch", total=len(taken)) if progress is not None else None
    chatty = progress is None or not progress.console.is_terminal  # a job's log: a line per image
    try:
        for n, key in enumerate(taken, 1):
            if progress is not None:
                progress.update(bar, description=key)
            result = spec.result_key(key)
            if result in present or target.exists(result):
                manifest["skipped"].append({"input": key, "output": result})
            else:
                if callable(pipeline):  # the first image left to compute: load the model now
                    load_started = time.perf_counter()
                    pipeline = pipeline()
                    timings["load_s"] = round(time.perf_counter() - load_started, 3)
                    manifest["model"], manifest["settings"] = pipeline.model_name, _settings(pipeline.settings)
                entry = _one(pipeline, spec, source, target, key, result, loop)
                manifest["failed" if "code" in entry else "succeeded"].append(entry)
                if "code" in entry:
                    logger.warning("[%d/%d] %s failed: %s (%s)", n, len(taken), key, entry["message"], entry["code"])
                elif chatty:
                    logger.info("[%d/%d] %s -> %s (%.1f s)", n, len(taken), key, result, entry["seconds"])
            if progress is not None:
                progress.advance(bar)
    finally:
        loop.close()
        computed = [item["seconds"] for item in manifest["succeeded"] + manifest["failed"]]
        manifest["timings"] = {**timings, "finished": _now(), "images_s": round(sum(computed), 3),
                               "mean_image_s": round(sum(computed) / len(computed), 3) if computed else None,
                               "total_s": round(time.perf_counter() - clock, 3)}
        try:
            target.write(spec.manifest_key, json.dumps(manifest, indent=2).encode(), "application/json")
        except Exception as exc:
            raise SegAnyError(f"writing the manifest {target.uri}/{spec.manifest_key} failed: {exc}") from exc
    manifest["manifest"] = f"{target.uri}/{spec.manifest_key}"
    return manifest


def merge_manifests(output: str) -> dict[str, Any]:
    """Join OUTPUT's task manifests into ``OUTPUT/_manifest.json`` and return it. Only the task count
    of the latest run is joined; task files of a run with another count are listed as ``ignored``."""
    store = open_store(output)
    names = [key for key in store.list() if key.startswith(MANIFESTS + "/task-") and key.endswith(".json")]
    parts = {key: json.loads(store.read(key, 1 << 30)) for key in names}
    if not parts:
        raise ConfigError(f"no task manifest under {store.uri}/{MANIFESTS}/")
    latest = max(parts.values(), key=lambda part: part.get("timings", {}).get("finished", ""))
    count = latest.get("task_count", 1)
    used = sorted((p for p in parts.values() if p.get("task_count") == count), key=lambda p: p.get("task_index", 0))
    times = [p.get("timings", {}) for p in used]
    merged: dict[str, Any] = {
        "version": 1, "input": latest.get("input"), "output": output, "task": latest.get("task"),
        "request": latest.get("request"), "task_count": count, "tasks": len(used),
        "missing_tasks": sorted(set(range(count)) - {p.get("task_index") for p in used}),
        "ignored": sorted(k for k, p in parts.items() if p.get("task_count") != count),
        "model": next((p["model"] for p in used if p.get("model")), None),
    }
    for kind in ("taken", "succeeded", "skipped", "failed"):
        merged[kind] = [item for part in used for item in part.get(kind, [])]
    merged["timings"] = {"started": min(t.get("started", "") for t in times), "finished": max(t.get("finished", "") for t in times),
                         "images_s": round(sum(t.get("images_s", 0) for t in times), 3),
                         "task_total_s": [t.get("total_s") for t in times]}
    store.write(f"{MANIFESTS}.json", json.dumps(merged, indent=2).encode(), "application/json")
    return merged


def load_pipeline(settings: Any) -> Any:
    """The pipeline, loaded. Images go one at a time and no BentoML batcher runs here, so batching is
    off (max_batch_size 1: nothing to prime)."""
    from runners.pipeline import Pipeline

    pipeline = Pipeline(dataclasses.replace(settings, max_batch_size=1))
    pipeline.load()
    return pipeline
