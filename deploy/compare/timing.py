"""Seconds a request of each kind keeps an instance busy on a target, and its cold start: an input
of the cost model (the compare runner measures them), with defaults from ``bench/results``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from deploy.compare.workload import Demand

BENCH_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass(frozen=True)
class Timing:
    """Seconds one request of each kind keeps an instance busy, and a cold start's seconds."""

    point: float
    point_cached: float
    everything: float
    cold_start_s: float = 0.0
    source: str = "given"

    def mean(self, demand: Demand) -> float:
        return sum(k.share * getattr(self, k.name) for k in demand.kinds)


def bench_timing(model: str, results: Path = BENCH_RESULTS) -> Timing:
    """Seconds per request kind as measured on this project's 2-core CPU runs (bench/results):
    a first point prompt = the served encoder plus a prompt, a cached prompt = the served point
    prompt, segment-everything = vit_b's measured run (vit_h: that run with vit_h's encoder in
    place of vit_b's, the decoder work being the same). Cold start = the server's ready time."""
    cold = json.loads((results / "coldstart.json").read_text())["models"]
    row = next((v for k, v in cold.items() if k.startswith(f"{model} (defaults")), None)
    if model not in ("vit_b", "vit_h") or row is None:
        raise ValueError(f"no per-request figures for {model!r} in {results}: measure them (segany compare) "
                         "and pass a Timing")
    serve = json.loads((results / "serve-vit_b.json").read_text())["served"]
    encoder = json.loads((results / "encoder.json").read_text())["models"]
    everything_b = json.loads((results / "everything-vit_b.json").read_text())["photos"]["dog"]["defaults"]["ours_full_s"]
    encode_b = 1 / encoder["vit_b"]["images_per_s"]["ours_served"]
    encode = 1 / encoder[model]["images_per_s"]["ours_served"]
    point_cached = serve["point"]["median_s"]
    everything = everything_b - encode_b + encode
    if model == "vit_b":
        point = serve["first_prompt_s"]
    else:
        point = encode + point_cached
    estimated = "" if model == "vit_b" else "; prompt and everything from vit_b's decoder runs (estimated)"
    return Timing(point, point_cached, everything, row["ready_s"], f"bench/results ({model}, 2-core CPU{estimated})")
