"""``segany compare``'s measuring half: the workload's requests against each target's emulator in turn.

Per target: the emulator (``deploy.emulate``) is built over a fresh server process and served on
127.0.0.1; the workload's sessions (bursts) are sent as a client of that platform sends them
(SageMaker: boto3 ``sagemaker-runtime``, Cloud Run: HTTP to the service's own paths, async: S3 in
and out on a local moto server), with a pause longer than ``idle_s`` between sessions so that the
targets that scale to zero pay a cold start. Every request is recorded (:class:`RequestRecord`):
kind, image, latency, status, the failure cause and the workaround the client needed.

SageMaker real-time and serverless send a request the way ``deploy/aws/invoke.py`` does: inline
JSON (image in base64) while it fits the cap, else the image as the raw body with the prompts in
``CustomAttributes``, else the request is sent anyway and refused (the S3 ``image_url`` route needs a
bucket the endpoint's role reads: not emulated here), which is recorded as a "payload limit" failure.
"""

from __future__ import annotations

import base64
import json
import math
import os
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from deploy.compare.workload import Workload, image_sizes, materialize

ALL_TARGETS = ("sagemaker-realtime", "sagemaker-serverless", "sagemaker-async", "cloudrun")
CAUSES = ("payload limit", "timeout", "memory", "scale-from-zero", "concurrency", "container error", "skipped")
ENDPOINT = "sam"


@dataclass
class RequestRecord:
    target: str
    session: int
    kind: str  # point, point_cached, everything
    image: str
    image_bytes: int
    ok: bool
    status: int | None
    latency_s: float
    cause: str | None = None  # one of CAUSES when not ok
    detail: str = ""
    workaround: str | None = None  # "raw body", "image_id reuse", "async (S3 in/out)", "none possible"
    cold_start_s: float | None = None  # the emulator's measured start, when this request paid one


@dataclass
class TargetRun:
    target: str
    records: list[RequestRecord] = field(default_factory=list)
    cold_starts: list[dict] = field(default_factory=list)  # the instance's: at, seconds, reason
    first_response_s: float | None = None  # from the first request sent (at zero) to its answer
    wall_s: float = 0.0
    busy_s: float = 0.0
    note: str = ""
    limits: dict = field(default_factory=dict)

    @property
    def throughput_rps(self) -> float:
        return len([r for r in self.records if r.ok]) / self.busy_s if self.busy_s else 0.0


@dataclass
class Run:
    workload: str
    model: str
    targets: list[TargetRun]
    images: dict[str, int]
    requests_per_target: int
    idle_s: float
    started: str
    machine: str

    def to_json(self) -> dict:
        return {"workload": self.workload, "model": self.model, "images": self.images,
                "requests_per_target": self.requests_per_target, "idle_s": self.idle_s, "started": self.started,
                "machine": self.machine,
                "targets": [{**{k: v for k, v in asdict(t).items() if k != "records"}, "throughput_rps": t.throughput_rps,
                             "records": [asdict(r) for r in t.records]} for t in self.targets]}

    @classmethod
    def from_json(cls, data: dict) -> "Run":
        """A run read back from report.json's ``run`` (to render a report again)."""
        targets = []
        for t in data["targets"]:
            fields = {k: v for k, v in t.items() if k not in ("records", "throughput_rps")}
            targets.append(TargetRun(**fields, records=[RequestRecord(**r) for r in t["records"]]))
        return cls(data["workload"], data["model"], targets, data["images"], data["requests_per_target"], data["idle_s"],
                   data["started"], data["machine"])


# --- the request plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    session: int
    kind: str
    image: str


def plan(workload: Workload, requests: int | None = None) -> list[Planned]:
    """Sessions of the workload's burst size (or fewer, so that ``requests`` visits every image),
    one image each (cycling), kinds by the mix: everything first, then the first prompt, then the
    prompts on the cached image; largest remainders round the shares, and every kind of the mix
    appears at least once in a session that has room for each."""
    burst = max(1, round(workload.profile.burst_size))
    total = requests or burst * len(workload.images)
    size = max(1, min(burst, math.ceil(total / len(workload.images))))
    shares = {k.name: k.share for k in workload.kinds}
    exact = {k: s * size for k, s in shares.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[:size - sum(counts.values())]:
        counts[k] += 1
    for k in ("point", "everything", "point_cached"):  # every kind of the mix at least once, when the session holds them
        if shares.get(k) and not counts.get(k) and size >= len(shares):
            donor = max(counts, key=lambda d: counts[d])
            counts[donor] -= 1
            counts[k] = 1
    if counts.get("point_cached") and not counts.get("point"):  # a cached prompt needs a first prompt
        counts["point_cached"] -= 1
        counts["point"] = 1
    session = [k for k in ("everything", "point", "point_cached") for _ in range(counts.get(k, 0))]
    out: list[Planned] = []
    s = 0
    while len(out) < total:
        image = workload.images[s % len(workload.images)].id
        out.extend(Planned(s, kind, image) for kind in session[:total - len(out)])
        s += 1
    return out


# --- serving an emulator in this process ----------------------------------------------------------------
class Served:
    """A front served by uvicorn in a thread on 127.0.0.1 (as tests/test_emulate.py does)."""

    def __init__(self, front: Any) -> None:
        import uvicorn

        from bench.server import free_port

        self.front = front
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(front, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


class _MotoS3:
    """A local S3 (moto's threaded server) for the async target, set in this process's environment
    while it runs (the async front's boto3 client reads AWS_ENDPOINT_URL)."""

    KEYS = {"AWS_ENDPOINT_URL": None, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}

    def __enter__(self) -> "_MotoS3":
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

        from bench.server import free_port

        port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.saved = {k: os.environ.get(k) for k in self.KEYS}
        os.environ.update({k: v or f"http://127.0.0.1:{port}" for k, v in self.KEYS.items()})
        import boto3

        self.client = boto3.session.Session().client("s3")
        self.bucket = "segany-compare"
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.server.stop()


# --- clients --------------------------------------------------------------------------------------------
def _fields(kind: str, image_id: str | None, point: list[int], points_per_side: int) -> dict[str, Any]:
    if kind == "everything":
        return {"task": "everything", "output": "rle", "points_per_side": points_per_side}
    fields: dict[str, Any] = {"task": "segment", "output": "rle", "points": [point], "labels": [1]}
    if kind == "point_cached" and image_id:
        fields["image_id"] = image_id
    return fields


def _sagemaker_cause(code: str, message: str) -> str:
    text = message.lower()
    if code == "ValidationError" and "oversize" in text or "response payload" in text or "too large" in text:
        return "payload limit"
    if "timed out" in text:
        return "timeout"
    if "out of memory" in text or "memory limit" in text:
        return "memory"
    if code == "ThrottlingException":
        return "concurrency"
    return "container error"


def _cloudrun_cause(status: int, text: str) -> str:
    if status == 413 or (status == 500 and "exceeds the" in text):
        return "payload limit"
    if status == 504:
        return "timeout"
    if status == 500 and "Memory limit" in text:
        return "memory"
    if status == 429:
        return "concurrency"
    return "container error"


class _Client:
    """Sends one planned request to the served emulator; returns (ok, status, image_id, cause, detail, workaround)."""

    def __init__(self, target: str, url: str, points_per_side: int, s3: _MotoS3 | None) -> None:
        self.target, self.url, self.points_per_side, self.s3 = target, url, points_per_side, s3
        if target.startswith("sagemaker"):
            import boto3
            from botocore.config import Config

            self.runtime = boto3.session.Session().client(
                "sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=4000, connect_timeout=30))
        else:
            import httpx

            self.http = httpx.Client(base_url=url, timeout=4000)

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()

    def send(self, kind: str, data: bytes, image_id: str | None, point: list[int]) -> tuple:
        fields = _fields(kind, image_id, point, self.points_per_side)
        if self.target == "cloudrun":
            return self._cloudrun(kind, data, fields)
        if self.target == "sagemaker-async":
            return self._async(kind, data, fields)
        return self._sagemaker(kind, data, fields)

    def _cloudrun(self, kind: str, data: bytes, fields: dict) -> tuple:
        task = fields.pop("task")
        body = dict(fields)
        if "image_id" not in body:
            body["image"] = base64.b64encode(data).decode()
        path = "/segment_everything" if task == "everything" else "/segment"
        answer = self.http.post(path, json=body)
        workaround = "image_id reuse" if "image_id" in fields else None
        if answer.status_code >= 400:
            return False, answer.status_code, None, _cloudrun_cause(answer.status_code, answer.text), answer.text[:300], workaround
        return True, answer.status_code, answer.json().get("image_id"), None, "", workaround

    def _sagemaker(self, kind: str, data: bytes, fields: dict) -> tuple:
        from botocore.exceptions import ClientError

        from deploy.aws.invoke import _attributes
        from deploy.limits import SAGEMAKER, SAGEMAKER_CUSTOM_ATTRIBUTES_MAX

        cap = SAGEMAKER[self.target.removeprefix("sagemaker-")].request_bytes or 0
        call: dict[str, Any] = {"EndpointName": ENDPOINT, "Accept": "application/json"}
        workaround = None
        if "image_id" in fields:
            call.update(ContentType="application/json", Body=json.dumps(fields).encode())
            workaround = "image_id reuse"
        else:
            inline = json.dumps({**fields, "image": base64.b64encode(data).decode()}).encode()
            attributes = _attributes(fields)
            if len(inline) <= cap:
                call.update(ContentType="application/json", Body=inline)
            elif len(data) <= cap and len(attributes) <= SAGEMAKER_CUSTOM_ATTRIBUTES_MAX:
                call.update(ContentType="image/jpeg", Body=data, CustomAttributes=attributes)
                workaround = "raw body (base64 JSON over the cap)"
            else:  # S3 image_url would need a bucket the endpoint reads: sent as is, refused
                call.update(ContentType="image/jpeg", Body=data, CustomAttributes=attributes)
                workaround = "none possible inline (image over the cap): S3 upload or async needed"
        try:
            answer = self.runtime.invoke_endpoint(**call)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return False, status, None, _sagemaker_cause(code, message), f"{code}: {message}"[:300], workaround
        body = json.loads(answer["Body"].read())
        return True, 200, body.get("image_id"), None, "", workaround

    def _async(self, kind: str, data: bytes, fields: dict) -> tuple:
        from deploy.aws.invoke import _attributes

        assert self.s3 is not None
        key = f"inputs/{uuid.uuid4().hex}"
        if "image_id" in fields:
            self.s3.client.put_object(Bucket=self.s3.bucket, Key=key, Body=json.dumps(fields).encode())
            content_type, attributes = "application/json", None
        else:
            self.s3.client.put_object(Bucket=self.s3.bucket, Key=key, Body=data)
            content_type, attributes = "image/jpeg", _attributes(fields)
        call = {"EndpointName": ENDPOINT, "InputLocation": f"s3://{self.s3.bucket}/{key}", "ContentType": content_type,
                "Accept": "application/json"}
        if attributes:
            call["CustomAttributes"] = attributes
        answer = self.runtime.invoke_endpoint_async(**call)
        workaround = "async (S3 in/out)" + (" + image_id reuse" if "image_id" in fields else "")
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            for location, ok in ((answer["OutputLocation"], True), (answer.get("FailureLocation"), False)):
                bucket, _, k = location.removeprefix("s3://").partition("/")
                try:
                    body = self.s3.client.get_object(Bucket=bucket, Key=k)["Body"].read()
                except Exception:
                    continue
                if ok:
                    return True, 200, json.loads(body).get("image_id"), None, "", workaround
                text = body.decode(errors="replace")
                return False, None, None, _sagemaker_cause("", text), text[:300], workaround
            time.sleep(0.05)
        return False, None, None, "timeout", "no output after 3600 s", workaround


# --- one target, then all ---------------------------------------------------------------------------------
def _point(path: Path, image_id: str) -> list[int]:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return [w // 2, h // 2]


def run_target(target: str, workload: Workload, paths: dict[str, Path], planned: list[Planned], env: dict[str, str],
               work_dir: Path, *, idle_s: float, points_per_side: int = 16,
               on_request: Callable[[RequestRecord], None] | None = None) -> TargetRun:
    from dataclasses import asdict as _asdict

    from deploy.emulate import build, instance_for

    run = TargetRun(target)
    instance = instance_for(target, env, work_dir / "logs" / target)
    s3 = _MotoS3() if target == "sagemaker-async" else None
    sizes = image_sizes(paths)
    data = {i: p.read_bytes() for i, p in paths.items()}
    points = {i: _point(p, i) for i, p in paths.items()}
    try:
        if s3 is not None:
            s3.__enter__()
        kwargs: dict[str, Any] = {"idle_s": None if target == "sagemaker-realtime" else idle_s}
        if target.startswith("sagemaker"):
            kwargs["endpoint"] = ENDPOINT
        if s3 is not None:
            kwargs["output"] = f"s3://{s3.bucket}/out"
        front = build(target, instance, **kwargs)
        run.limits = {**_asdict(front.target.limits), "timeout_s": front.target.timeout_s,
                      "max_concurrency": front.target.max_concurrency, "scales_to_zero": front.target.scales_to_zero,
                      "billing": front.target.billing}
        if not front.target.scales_to_zero:  # real-time: InService (and billed) before its first request
            instance.ensure_running(reason="at endpoint creation")
        with Served(front) as served:
            client = _Client(target, served.url, points_per_side, s3)
            image_ids: dict[str, str | None] = {}
            first_failed: dict[str, RequestRecord] = {}
            started = time.monotonic()
            session = None
            try:
                for p in planned:
                    if session is not None and p.session != session and front.target.scales_to_zero:
                        _wait_for_zero(instance, idle_s)  # the gap between sessions: longer than the idle period
                    session = p.session
                    key = f"{p.session}:{p.image}"
                    if p.kind == "point_cached" and not image_ids.get(key):
                        cause_of = first_failed.get(key)
                        record = RequestRecord(target, p.session, p.kind, p.image, sizes[p.image], False, None, 0.0,
                                               "skipped", "no image_id: the first prompt on this image failed"
                                               + (f" ({cause_of.cause})" if cause_of else ""))
                    else:
                        starts = len(instance.cold_starts)
                        t0 = time.perf_counter()
                        try:
                            ok, status, image_id, cause, detail, workaround = client.send(
                                p.kind, data[p.image], image_ids.get(key), points[p.image])
                        except Exception as exc:  # a client-side failure is recorded, not fatal
                            ok, status, image_id, cause, detail, workaround = False, None, None, "container error", repr(exc)[:300], None
                        latency = time.perf_counter() - t0
                        cold = instance.cold_starts[-1].seconds if len(instance.cold_starts) > starts else None
                        if not ok and cold is None and cause == "container error" and instance.state != "running":
                            cause = "scale-from-zero"
                        if not ok and cold is not None and cause in ("timeout", "container error"):
                            cause = "scale-from-zero"
                        record = RequestRecord(target, p.session, p.kind, p.image, sizes[p.image], ok, status, latency,
                                               cause, detail, workaround, cold)
                        if run.first_response_s is None:
                            run.first_response_s = latency
                        run.busy_s += latency
                        if p.kind == "point":
                            image_ids[key] = image_id if ok else None
                            if not ok:
                                first_failed[key] = record
                    run.records.append(record)
                    if on_request:
                        on_request(record)
            finally:
                client.close()
            run.wall_s = time.monotonic() - started
        run.cold_starts = [_asdict(c) for c in instance.cold_starts]
        if target == "sagemaker-realtime" and run.cold_starts:
            run.note = "started at endpoint creation (billed from then), never scales to zero"
    finally:
        instance.close()
        if s3 is not None:
            s3.__exit__(None, None, None)
    return run


def _wait_for_zero(instance: Any, idle_s: float) -> None:
    deadline = time.monotonic() + idle_s + 15
    while instance.state != "stopped" and time.monotonic() < deadline:
        time.sleep(0.1)


def server_env(model: str, cache_dir: Path, checkpoint: str | None = None) -> dict[str, str]:
    env = {**os.environ, "SEGANY_MODEL": model, "SEGANY_CACHE_DIR": str(cache_dir), "SEGANY_MAX_BODY_MB": "40",
           "BENTOML_DO_NOT_TRACK": "true"}
    env.setdefault("SEGANY_DEVICE", "cpu")
    if checkpoint:
        env["SEGANY_CHECKPOINT"] = checkpoint
    return env


def run_compare(workload: Workload, targets: tuple[str, ...] | list[str], out_dir: Path, *, model: str | None = None,
                requests: int | None = None, idle_s: float = 2.0, points_per_side: int = 16,
                env: dict[str, str] | None = None, prime: bool = True, images_dir: str | Path | None = None, progress: Callable[[str, RequestRecord | None], None] | None = None) -> Run:
    """Run ``workload`` against each target's emulator in turn. Generated images are written to
    ``images_dir`` (default: a temporary folder, so a report folder holds no multi-MB JPEGs); the
    server logs go to a temporary folder too. ``out_dir`` is not written here (see report.py)."""
    import datetime as dt
    import platform

    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {', '.join(unknown)}; one of {', '.join(ALL_TARGETS)}")
    if "sagemaker-async" in targets:
        import importlib.util

        if importlib.util.find_spec("moto") is None:
            raise ValueError("sagemaker-async needs a local S3: pip install 'moto[server]' (the test extra), or leave "
                             "sagemaker-async out of --targets")
    model = model or workload.model
    out_dir = Path(out_dir)
    work = Path(tempfile.mkdtemp(prefix="segany-compare-"))
    paths = materialize(workload, Path(images_dir) if images_dir else work / "images")
    planned = plan(workload, requests)
    env = env or server_env(model, work / "cache")
    env = {**env, "SEGANY_MODEL": model}
    if prime:  # fill the server's caches (checkpoint, converted encoder) once, so no target pays them
        if progress:
            progress("priming", None)
        from deploy.emulate import instance_for

        primer = instance_for("cloudrun", env, work / "logs" / "priming")
        try:
            primer.ensure_running(reason="priming (not counted)")
        finally:
            primer.close()
    runs = []
    for target in targets:
        if progress:
            progress(target, None)
        runs.append(run_target(target, workload, paths, planned, env, work, idle_s=idle_s, points_per_side=points_per_side,
                               on_request=(lambda r, t=target: progress(t, r)) if progress else None))
    return Run(workload.name, model, runs, image_sizes(paths), len(planned), idle_s,
               dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
