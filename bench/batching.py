"""Adaptive batching: /embed throughput and p95 latency at concurrency 1, 4 and 16, with
BentoML's batcher on (SEGANY_MAX_BATCH_SIZE=8, or ``max_batch``) and off (1), and the batch
sizes that formed (from /metrics). Fresh images every run, so the cache never answers. On a GPU
(the server's device, SEGANY_DEVICE=auto) give more images per level (``rounds``): a level of 16
images is a fraction of a second there. Results: batching-MODEL.json, batching-MODEL-cuda.json."""

from __future__ import annotations

import base64
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import CACHE, bench_env, distinct_images, logger, random_checkpoint, summary, write_result
from bench.server import ServerProcess
from runners.pipeline import BATCHER_TRAINING_CALLS



def batch_sizes(metrics: str) -> dict[str, float]:
    """Histogram of formed batch sizes of `encode`: {"1": n, "2": n, ...} (non-cumulative)."""
    cumulative = {}
    for line in metrics.splitlines():
        if line.startswith("bentoml_service_adaptive_batch_size_bucket") and 'method_name="encode"' in line:
            le = re.search(r'le="([^"]+)"', line)[1]
            cumulative[le] = cumulative.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    sizes, previous = {}, 0.0
    for le in sorted((k for k in cumulative if k != "+Inf"), key=float):
        count = cumulative[le] - previous
        if count:
            sizes[str(int(float(le)))] = count
        previous = cumulative[le]
    return sizes


def run_level(url: str, images: list[bytes], concurrency: int) -> dict:
    latencies: list[float] = []

    def embed(data: bytes) -> None:
        start = time.perf_counter()
        with httpx.Client(base_url=url, timeout=3600) as client:
            client.post("/embed", json={"image": base64.b64encode(data).decode()}).raise_for_status()
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(embed, images))
    wall = time.perf_counter() - start
    return {"images_per_s": len(images) / wall, "latency": summary(latencies)}


def run(model_type: str = "vit_b", levels: tuple[int, ...] = (1, 4, 16), max_batch: int = 8, rounds: int = 1) -> dict:
    import torch

    device = "cuda" if os.environ.get("SEGANY_DEVICE", "auto") != "cpu" and torch.cuda.is_available() else "cpu"
    checkpoint = random_checkpoint(model_type)
    results: dict = {}
    offset = 2000

    def write(complete: bool) -> None:  # after every level: a run cut short keeps what it measured
        both = [level for level in levels if level in results.get("on", {}) and level in results.get("off", {})]
        ratios = {f"c{level}_on_vs_off": results["on"][level]["images_per_s"] / results["off"][level]["images_per_s"]
                  for level in both}
        write_result(f"batching-{model_type}" + ("-cuda" if device == "cuda" else ""),
                     {"model": model_type, "device": device, "max_batch_size": max_batch, "complete": complete,
                      "modes": results, "ratios": ratios, "goals": {"c16_on_vs_off (GPU)": ">= 2"}})

    for mode, env in {"on": {"SEGANY_MAX_BATCH_SIZE": str(max_batch)}, "off": {"SEGANY_MAX_BATCH_SIZE": "1"}}.items():
        server = ServerProcess(bench_env(model_type, checkpoint, **env), CACHE / f"batching-{model_type}-{mode}.log").start()
        try:
            server.wait_ready(timeout_s=3600)
            results[mode] = {}
            for level in levels:
                images = [data for data, _ in distinct_images(rounds * max(level, 4), offset=offset)]
                offset += len(images)
                results[mode][level] = run_level(server.url, images, level)
                logger.info("batching %s, concurrency %d: %.4f img/s, p95 %.1f s", mode, level,
                            results[mode][level]["images_per_s"], results[mode][level]["latency"]["p95_s"])
                write(False)
            sizes = batch_sizes(httpx.get(f"{server.url}/metrics", timeout=30).text)
            if sizes.get("1", 0) >= BATCHER_TRAINING_CALLS:  # the pipeline's no-op calls that prime the batcher
                sizes["1"] -= BATCHER_TRAINING_CALLS
            results[mode]["batch_sizes"] = {size: count for size, count in sizes.items() if count}
        finally:
            server.stop()
    write(True)
    return results
