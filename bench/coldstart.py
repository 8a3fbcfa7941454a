"""Cold start and memory: process start to ``/readyz`` 200, against the floor, and peak RSS.

The floor is what no server can avoid: a fresh interpreter importing the runtime (torch,
segment_anything, openvino) and reading the checkpoint's bytes from disk (page cache warm, as on a
restarted container of the same host; both sides see the same cache). The server's time
includes BentoML's start, loading (the converted encoder comes from the cache: a priming
start converts it first, untimed), and the warm-up that ``/readyz`` waits for: a full
encoder+decoder forward (``SEGANY_WARMUP=full``) or a decoder forward (``decoder``).
Peak RSS is read from the kernel (VmHWM) after one ``/segment`` request. VmHWM counts the
file-backed pages of memory-mapped weights, which the kernel can drop under pressure, so the
vit_h server is also started inside a memory cgroup capped at 6144 MiB (``bench/memcap.py``):
it fits if it gets ready and serves with no OOM kill.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import httpx

from bench.common import CACHE, bench_env, logger, photo_bytes, random_checkpoint, write_result
from bench.memcap import MemoryCgroup, cgroup_name, evict_from_page_cache
from bench.server import ServerProcess

SERVERLESS_MEMORY_MB = 6144  # SageMaker Serverless' largest memory size


def floor_s(checkpoint) -> float:
    code = (
        "import torch, segment_anything, openvino\n"
        f"with open({str(checkpoint)!r}, 'rb') as f:\n"
        "    while f.read(1 << 24): pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # warm the page cache
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def one_segment(url: str) -> httpx.Response:
    """The one request every start is measured after: a point prompt on the truck photo."""
    image = base64.b64encode(photo_bytes("truck")).decode()
    return httpx.post(f"{url}/segment", json={"image": image, "points": [[500, 375]], "labels": [1]}, timeout=3600)


def measure(model_type: str, warmup: str, encoder: str = "auto") -> dict:
    checkpoint = random_checkpoint(model_type)
    floor = floor_s(checkpoint)
    env = bench_env(model_type, checkpoint, SEGANY_WARMUP=warmup, SEGANY_ENCODER=encoder)
    server = ServerProcess(env, CACHE / f"coldstart-{model_type}-{warmup}-{encoder}.log")
    start = time.perf_counter()
    server.start()
    try:
        server.wait_ready(timeout_s=3600)
        ready_s = time.perf_counter() - start
        one_segment(server.url).raise_for_status()
        peaks = server.peak_rss_mb()
    finally:
        server.stop()
    worker = max(peaks.values())
    result = {
        "checkpoint_mb": checkpoint.stat().st_size / 2**20,
        "floor_s": floor,
        "ready_s": ready_s,
        "ready_vs_floor": ready_s / floor,
        "peak_rss_mb_by_process": peaks,
        "peak_rss_mb_worker": worker,
        "peak_rss_mb_total": sum(peaks.values()),
        "under_serverless_memory": sum(peaks.values()) < SERVERLESS_MEMORY_MB,
    }
    logger.info("%s: ready in %.1f s (floor %.1f s, %.2fx); peak RSS %.0f MB total, worker %.0f MB",
                model_type, ready_s, floor, ready_s / floor, result["peak_rss_mb_total"], worker)
    return result


def capped(model_type: str, limit_mb: int = SERVERLESS_MEMORY_MB) -> dict:
    """Start, get ready and serve one /segment inside a memory cgroup of ``limit_mb``."""
    try:
        cgroup = MemoryCgroup(cgroup_name(model_type), limit_mb)
    except OSError as exc:
        return {"skipped": f"{exc} (run as root on Linux to measure this)"}
    checkpoint = random_checkpoint(model_type)
    evict_from_page_cache(checkpoint, CACHE / "segany-cache")
    server = ServerProcess(bench_env(model_type, checkpoint), CACHE / f"coldstart-{model_type}-capped.log")
    server.command = cgroup.wrap(server.command)
    result: dict = {"served": False}
    try:
        server.start()
        start = time.perf_counter()
        server.wait_ready(timeout_s=3600)
        result["ready_s"] = time.perf_counter() - start
        result["served"] = one_segment(server.url).status_code == 200
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        result["error"] = str(exc)[-500:]
    finally:
        server.stop()
        result.update(cgroup.report())
        cgroup.close()
    result["fits"] = result["served"] and result["oom_kills"] == 0
    logger.info("%s in a %d MiB cgroup: %s", model_type, limit_mb, result)
    return result


def prime(model_type: str) -> None:
    """One start to convert the encoder (once per checkpoint); the timed starts reuse it."""
    server = ServerProcess(bench_env(model_type, random_checkpoint(model_type), SEGANY_WARMUP="off"),
                           CACHE / f"coldstart-{model_type}-prime.log").start()
    try:
        server.wait_ready(timeout_s=3600)
    finally:
        server.stop()


def run(model_types: tuple[str, ...] = ("tiny", "vit_b", "vit_h")) -> dict:
    results = {}
    for model_type in model_types:
        prime(model_type)
        for warmup in ("full", "decoder"):
            results[f"{model_type} ({warmup} warm-up)"] = measure(model_type, warmup)
        if model_type.startswith("vit_h"):  # the memory-lean reference path: weights mapped once, in torch
            results[f"{model_type} (full warm-up, SEGANY_ENCODER=torch)"] = measure(model_type, "full", "torch")
    capped_runs = {f"{model_type} in {limit} MiB": capped(model_type, limit)
                   for model_type in model_types if model_type.startswith("vit_h") for limit in (SERVERLESS_MEMORY_MB, 4608)}
    write_result("coldstart", {"device": "cpu", "models": results, "memory_capped": capped_runs, "goals": {"peak_rss_mb_total (vit_h)": f"< {SERVERLESS_MEMORY_MB}"}})
    return results
