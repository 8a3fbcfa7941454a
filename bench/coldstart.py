"""Cold start and memory: process start to ``/readyz`` 200, against the floor, and peak RSS.

The floor is what no server can avoid: a fresh interpreter importing the runtime (torch,
segment_anything, openvino) and reading the checkpoint's bytes from disk (page cache warm, as on a
restarted container of the same host; both sides see the same cache). The default server no longer
imports torch (runners/converted_engine.py), so a second floor is measured beside it, the
"runtime floor": a fresh interpreter importing what that server runs on (openvino, numpy, PIL)
and reading the converted encoder's and prompt decoder's weights. Floor and start are
measured alternately, three times each, and compared by median. This machine's kernel reclaims
page cache left idle for a while (DAMON), so before each start the server's own files (the
converted encoder and its compiled blob) are read once too, as the floor reads its checkpoint,
and both sides start with memory the VM's host has just handed back (:func:`touch_fresh_memory`).
The server starts as the image starts it (``segany entrypoint``: one process, BentoML's service
worker on the port), and once as ``bentoml serve`` (a supervisor process, then the worker). Its time
includes BentoML's start, loading (the converted encoder comes from the cache: a priming
start converts it first, untimed), and the warm-up that ``/readyz`` waits for: a decoder forward
(the default with OpenVINO) or a full encoder+decoder forward (``SEGANY_WARMUP=full``). The
"baked" variant starts as an image built with ``--bake-weights`` does: the IR from
``SEGANY_OPENVINO_DIR``, compiled at start with no compiled blob kept, and no checkpoint.
Peak RSS is read from the kernel (VmHWM) after one ``/segment`` request. VmHWM counts the
file-backed pages of memory-mapped weights, which the kernel can drop under pressure, so the
vit_h server is also started inside a memory cgroup capped at 6144 MiB (``bench/memcap.py``):
it fits if it gets ready and serves with no OOM kill.
"""

from __future__ import annotations

import base64
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import CACHE, bench_env, logger, photo_bytes, random_checkpoint, write_result
from bench.memcap import MemoryCgroup, cgroup_name, evict_from_page_cache, files_under
from bench.server import ServerProcess, entrypoint_process

SERVERLESS_MEMORY_MB = 6144  # SageMaker Serverless' largest memory size
ROUNDS = 3  # floor and start alternated, compared by median


def fresh_interpreter_s(imports: str, files: list[Path]) -> float:
    """Seconds for a fresh interpreter to import ``imports`` and read ``files`` (page cache warm)."""
    code = (
        f"import sys, {imports}\n"
        "for path in sys.argv[1:]:\n"
        "    with open(path, 'rb') as f:\n"
        "        while f.read(1 << 24): pass\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *map(str, files)], check=True)
    return time.perf_counter() - start


def floor_s(checkpoint: Path) -> float:
    """The floor: the runtime a torch server needs imported and the checkpoint read."""
    return fresh_interpreter_s("torch, segment_anything, openvino", [checkpoint])


def runtime_floor_s(weights: list[Path]) -> float:
    """The torch-free server's runtime imported and its converted weights read."""
    return fresh_interpreter_s("numpy, openvino, PIL.Image", weights)


def touch_fresh_memory(gib: int = 6) -> None:
    """Touch ``gib`` GiB of memory in a child process, then free it. On a VM whose host takes back
    the memory its guest leaves unused (this machine: after about a minute), touching memory again
    costs the host's faults: 4 GiB took 10.4 s there against 0.7 s right after. A vit_h start
    allocates about 4 GiB and the floor little, so without this a start measured the host."""
    subprocess.run([sys.executable, "-c", f"block = b'1' * ({gib} << 30)"], check=True)


def read_into_page_cache(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass


def one_segment(url: str) -> httpx.Response:
    """The one request every start is measured after: a point prompt on the truck photo."""
    image = base64.b64encode(photo_bytes("truck")).decode()
    return httpx.post(f"{url}/segment", json={"image": image, "points": [[500, 375]], "labels": [1]}, timeout=3600)


def start_once(server: ServerProcess, serve_one: bool) -> tuple[float, dict[str, float]]:
    """Seconds from process start to /readyz 200; with ``serve_one``, the peak RSS per process
    after one /segment request."""
    start = time.perf_counter()
    server.start()
    try:
        server.wait_ready(timeout_s=3600)
        ready_s = time.perf_counter() - start
        if not serve_one:
            return ready_s, {}
        one_segment(server.url).raise_for_status()
        return ready_s, server.peak_rss_mb()
    finally:
        server.stop()


def measure(model_type: str, variant: str, rounds: int = ROUNDS, bentoml_serve: bool = False, **env: str) -> dict:
    """``rounds`` floors and starts, alternated (this machine's speed drifts), compared by median.
    ``env``: the settings that make this variant (none: the defaults). The server starts as the
    image's entrypoint does, or with ``bentoml_serve`` as ``bentoml serve service:SegmentAnything``."""
    checkpoint = random_checkpoint(model_type)
    floor_s(checkpoint)  # warm the page cache
    log = CACHE / f"coldstart-{model_type}-{variant}.log"
    server_env = bench_env(model_type, checkpoint, **env)
    server = ServerProcess(server_env, log) if bentoml_serve else entrypoint_process(server_env, log)
    converted = converted_for(model_type)
    server_folders = [folder for folder in (converted.xml.parent, converted.compiled_cache) if folder]
    converted_weights = [xml.with_suffix(".bin") for xml in (converted.xml, converted.prompt_decoder_xml)]
    floors, runtime_floors, readies, peaks = [], [], [], {}
    for round_ in range(rounds):
        touch_fresh_memory()
        floors.append(floor_s(checkpoint))
        runtime_floors.append(runtime_floor_s(converted_weights))
        read_into_page_cache(files_under(*server_folders))  # the converted encoder and its compiled blob, once written
        touch_fresh_memory()
        ready_s, peaks = start_once(server, serve_one=round_ == rounds - 1)
        readies.append(ready_s)
    floor, ready, runtime_floor = statistics.median(floors), statistics.median(readies), statistics.median(runtime_floors)
    worker = max(peaks.values())
    result = {
        "checkpoint_mb": checkpoint.stat().st_size / 2**20,
        "floor_s": floor,
        "ready_s": ready,
        "ready_vs_floor": ready / floor,
        "floor_s_rounds": floors,
        "runtime_floor_s": runtime_floor,
        "ready_vs_runtime_floor": ready / runtime_floor,
        "runtime_floor_s_rounds": runtime_floors,
        "ready_s_rounds": readies,
        "peak_rss_mb_by_process": peaks,
        "peak_rss_mb_worker": worker,
        "peak_rss_mb_total": sum(peaks.values()),
        "under_serverless_memory": sum(peaks.values()) < SERVERLESS_MEMORY_MB,
    }
    logger.info("%s: ready in %.1f s (floor %.1f s, %.2fx; runtime floor %.1f s, %.2fx; medians of %d); peak RSS %.0f MB "
                "total, worker %.0f MB", model_type, ready, floor, ready / floor, runtime_floor, ready / runtime_floor, rounds,
                result["peak_rss_mb_total"], worker)
    return result


def capped(model_type: str, limit_mb: int = SERVERLESS_MEMORY_MB) -> dict:
    """Start, get ready and serve one /segment inside a memory cgroup of ``limit_mb``."""
    try:
        cgroup = MemoryCgroup(cgroup_name(model_type), limit_mb)
    except OSError as exc:
        return {"skipped": f"{exc} (run as root on Linux to measure this)"}
    checkpoint = random_checkpoint(model_type)
    evict_from_page_cache(checkpoint, CACHE / "segany-cache")
    server = entrypoint_process(bench_env(model_type, checkpoint), CACHE / f"coldstart-{model_type}-capped.log")
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
    start_once(entrypoint_process(bench_env(model_type, random_checkpoint(model_type), SEGANY_WARMUP="off"),
                                  CACHE / f"coldstart-{model_type}-prime.log"), serve_one=False)


def converted_for(model_type: str):  # type: ignore[no-untyped-def]
    """The converted encoder of the bench checkpoint in the servers' cache (converting it if needed)."""
    from runners.converted import converted_encoder

    return converted_encoder(CACHE / "segany-cache", random_checkpoint(model_type), None, model_type)


def baked_encoder_dir(model_type: str) -> str:
    """The converted encoder of the bench checkpoint, as an image built with --bake-weights holds it."""
    return str(converted_for(model_type).xml.parent)


def run(model_types: tuple[str, ...] = ("tiny", "vit_b", "vit_h")) -> dict:
    """Rows per model: the image's defaults, then one setting changed each. ``rss_row``: the row's
    peak RSS is reported (not for a server that only warms up differently from the defaults)."""
    results = {}
    for model_type in model_types:
        prime(model_type)
        rows = [  # (log name, label, settings, rss_row)
            ("default", "defaults: image entrypoint, one process, decoder warm-up", {}, True),
            ("bentoml-serve", "bentoml serve: supervisor + worker", {"bentoml_serve": True}, True),
            ("full", "full warm-up", {"SEGANY_WARMUP": "full"}, False),
            # a SageMaker model artifact served as it comes: the type read off the checkpoint, without torch
            ("model-unset", "SEGANY_MODEL unset", {"SEGANY_MODEL": ""}, False),
            # the default until the prompt decoder was converted: torch imported, SAM's prompt encoder loaded
            ("torch-engine", "torch engine: SEGANY_DECODER=torch", {"SEGANY_DECODER": "torch"}, True),
        ]
        if model_type != "tiny":  # as in an image built with --bake-weights: IR baked, no compiled blob kept
            rows.append(("baked", "baked encoder: SEGANY_OPENVINO_DIR, compiled at start",
                         {"SEGANY_OPENVINO_DIR": baked_encoder_dir(model_type), "SEGANY_CHECKPOINT": ""}, True))
        if model_type.startswith("vit_h"):  # the memory-lean reference path: weights mapped once, in torch
            rows.append(("torch", "SEGANY_ENCODER=torch, full warm-up", {"SEGANY_ENCODER": "torch"}, True))
        for variant, label, settings, rss_row in rows:
            results[f"{model_type} ({label})"] = {**measure(model_type, variant, **settings), "rss_row": rss_row}
    capped_runs = {f"{model_type} in {limit} MiB": capped(model_type, limit)
                   for model_type in model_types if model_type.startswith("vit_h") for limit in (SERVERLESS_MEMORY_MB, 4608)}
    write_result("coldstart", {"device": "cpu", "rounds": ROUNDS, "models": results, "memory_capped": capped_runs,
                               "goals": {"peak_rss_mb_total (vit_h)": f"< {SERVERLESS_MEMORY_MB}"}})
    return results
