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

import logging
import math
import os
import statistics
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from deploy.compare.clients import ENDPOINT, EmulatorClient, MotoS3, RealTarget
from deploy.compare.job_targets import JOB_TARGETS, run_jobs
from deploy.compare.workload import Workload, image_sizes, materialize

ALL_TARGETS = ("sagemaker-realtime", "sagemaker-serverless", "sagemaker-async", "cloudrun", "sagemaker-batch", "cloudrun-job")
logger = logging.getLogger(__name__)
CONVERSION_BUDGET_S = 3600  # priming converts the encoder once: minutes for vit_h on 2 cores
CAUSES = ("payload limit", "timeout", "memory", "scale-from-zero", "concurrency", "container error", "skipped")


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
    platform: str = ""  # the emulated target it is priced as (default: the target's own name)
    deployed: bool = False  # a real deployment (--aws-endpoint, --gcp-service), not an emulator

    def __post_init__(self) -> None:
        self.platform = self.platform or self.target

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


# --- one target, then all ---------------------------------------------------------------------------------
def _point(path: Path, image_id: str) -> list[int]:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return [w // 2, h // 2]


class _Sessions:
    """The planned requests sent in order through ``client``; records appended to ``run``. ``between``
    runs before each new session (the idle gap); ``instance`` (an emulator's) tells which request
    paid a cold start."""

    def __init__(self, run: TargetRun, client: Any, paths: dict[str, Path], instance: Any = None,
                 on_request: Callable[[RequestRecord], None] | None = None) -> None:
        self.run, self.client, self.instance, self.on_request = run, client, instance, on_request
        self.sizes = image_sizes(paths)
        self.data = {i: p.read_bytes() for i, p in paths.items()}
        self.points = {i: _point(p, i) for i, p in paths.items()}

    def send_all(self, planned: list[Planned], between: Callable[[], None]) -> None:
        run, instance = self.run, self.instance
        image_ids: dict[str, str | None] = {}
        first_failed: dict[str, RequestRecord] = {}
        started, session = time.monotonic(), None
        for p in planned:
            if session is not None and p.session != session:
                between()
            session = p.session
            key = f"{p.session}:{p.image}"
            if p.kind == "point_cached" and not image_ids.get(key):
                cause_of = first_failed.get(key)
                record = RequestRecord(run.target, p.session, p.kind, p.image, self.sizes[p.image], False, None, 0.0,
                                       "skipped", "no image_id: the first prompt on this image failed"
                                       + (f" ({cause_of.cause})" if cause_of else ""))
            else:
                starts = len(instance.cold_starts) if instance is not None else 0
                t0 = time.perf_counter()
                try:
                    ok, status, image_id, cause, detail, workaround = self.client.send(
                        p.kind, self.data[p.image], image_ids.get(key), self.points[p.image])
                except Exception as exc:  # a client-side failure is recorded, not fatal
                    ok, status, image_id, cause, detail, workaround = False, None, None, "container error", repr(exc)[:300], None
                latency = time.perf_counter() - t0
                cold = None
                if instance is not None:
                    cold = instance.cold_starts[-1].seconds if len(instance.cold_starts) > starts else None
                    if not ok and cold is None and cause == "container error" and instance.state != "running":
                        cause = "scale-from-zero"
                    if not ok and cold is not None and cause in ("timeout", "container error"):
                        cause = "scale-from-zero"
                record = RequestRecord(run.target, p.session, p.kind, p.image, self.sizes[p.image], ok, status, latency,
                                       cause, detail, workaround, cold)
                if run.first_response_s is None:
                    run.first_response_s = latency
                run.busy_s += latency
                if p.kind == "point":
                    image_ids[key] = image_id if ok else None
                    if not ok:
                        first_failed[key] = record
            run.records.append(record)
            if self.on_request:
                self.on_request(record)
        run.wall_s = time.monotonic() - started


def run_target(target: str, workload: Workload, paths: dict[str, Path], planned: list[Planned], env: dict[str, str],
               work_dir: Path, *, idle_s: float, points_per_side: int = 16,
               on_request: Callable[[RequestRecord], None] | None = None) -> TargetRun:
    """``target``'s emulator over a fresh server process, sessions apart by more than ``idle_s``."""
    from deploy.emulate import build, instance_for

    run = TargetRun(target)
    instance = instance_for(target, env, work_dir / "logs" / target)
    s3 = MotoS3() if target == "sagemaker-async" else None
    try:
        if s3 is not None:
            s3.__enter__()
        kwargs: dict[str, Any] = {"idle_s": None if target == "sagemaker-realtime" else idle_s}
        if target.startswith("sagemaker"):
            kwargs["endpoint"] = ENDPOINT
        if s3 is not None:
            kwargs["output"] = f"s3://{s3.bucket}/out"
        front = build(target, instance, **kwargs)
        run.limits = {**asdict(front.target.limits), "timeout_s": front.target.timeout_s,
                      "max_concurrency": front.target.max_concurrency, "scales_to_zero": front.target.scales_to_zero,
                      "billing": front.target.billing}
        if not front.target.scales_to_zero:  # real-time: InService (and billed) before its first request
            instance.ensure_running(reason="at endpoint creation")
        with Served(front) as served:
            client = EmulatorClient(target, served.url, points_per_side, s3)
            between = (lambda: _wait_for_zero(instance, idle_s)) if front.target.scales_to_zero else (lambda: None)
            try:
                _Sessions(run, client, paths, instance, on_request).send_all(planned, between)
            finally:
                client.close()
        run.cold_starts = [asdict(c) for c in instance.cold_starts]
        if target == "sagemaker-realtime" and run.cold_starts:
            run.note = "started at endpoint creation (billed from then), never scales to zero"
    finally:
        instance.close()
        if s3 is not None:
            s3.__exit__(None, None, None)
    return run


def run_deployed(target: RealTarget, paths: dict[str, Path], planned: list[Planned], *, idle_s: float,
                 points_per_side: int = 16, on_request: Callable[[RequestRecord], None] | None = None) -> TargetRun:
    """A real deployment through ``segany invoke``'s code; sessions ``idle_s`` apart (a real platform
    scales in after minutes: give ``--idle-s`` past it to measure cold starts). A cold start is not
    observable from outside: the first request of each session is reported as such."""
    client = target.client(points_per_side)
    run = TargetRun(target.name, platform=client.platform, deployed=True, limits=client.limits())
    try:
        _Sessions(run, client, paths, None, on_request).send_all(planned, lambda: time.sleep(idle_s))
    finally:
        client.close()
    firsts = {}
    for r in run.records:
        if r.ok and r.session not in firsts:
            firsts[r.session] = r.latency_s
    run.note = (f"a deployed {client.platform} ({client.where}); the first answer of each session "
                f"({', '.join(f'{x:.2f} s' for x in firsts.values())}) includes any scale from zero")
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
                env: dict[str, str] | None = None, prime: bool = True, images_dir: str | Path | None = None,
                progress: Callable[[str, RequestRecord | None], None] | None = None,
                deployed: tuple[RealTarget, ...] = (), deployed_idle_s: float | None = None) -> Run:
    """Run ``workload`` against each target's emulator in turn, then against each ``deployed`` one
    (sessions ``deployed_idle_s`` apart, default ``idle_s``). Generated images are written to
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
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        paths = materialize(workload, Path(images_dir) if images_dir else work / "images")
        planned = plan(workload, requests)
        env = env or server_env(model, work / "cache")
        env = {**env, "SEGANY_MODEL": model}
        if prime and targets:  # fill the server's caches (checkpoint, converted encoder) once, so no target pays them
            if progress:
                progress("priming", None)
            from deploy.emulate import instance_for

            primer = instance_for("cloudrun", env, work / "logs" / "priming")
            primer.ready_timeout_s = CONVERSION_BUDGET_S  # a conversion at first start is what priming is for
            try:
                primer.ensure_running(reason="priming (not counted)")
            finally:
                primer.close()
        runs = []
        for target in targets:
            if progress:
                progress(target, None)
            on_request = (lambda r, t=target: progress(t, r)) if progress else None
            if target in JOB_TARGETS:
                runs.append(run_jobs(target, paths, planned, env, work, model=model, points_per_side=points_per_side,
                                 point_of=lambda path: _point(path, ""), on_request=on_request))
                continue
            runs.append(run_target(target, workload, paths, planned, env, work, idle_s=idle_s, points_per_side=points_per_side,
                                   on_request=on_request))
        for real in deployed:
            if progress:
                progress(real.name, None)
            runs.append(run_deployed(real, paths, planned, idle_s=idle_s if deployed_idle_s is None else deployed_idle_s,
                                     points_per_side=points_per_side,
                                     on_request=(lambda r, t=real.name: progress(t, r)) if progress else None))
    except BaseException:
        logger.warning("segany compare stopped: the servers' logs are kept in %s", work / "logs")
        raise
    sizes = image_sizes(paths)
    shutil.rmtree(work, ignore_errors=True)  # generated images, logs, a default cache: nothing is kept
    return Run(workload.name, model, runs, sizes, len(planned), idle_s,
               dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}"
               + (f", load average {load:.1f} at the start" if load is not None else ""))


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
