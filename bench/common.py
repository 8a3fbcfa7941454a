"""Shared pieces of the benchmark suites: conditions, checkpoints, photos, timing, results."""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

logger = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
# Overridable for a smoke run (results elsewhere) and for a machine without ../shared beside the checkout.
RESULTS = Path(os.environ.get("SEGANY_BENCH_RESULTS", ROOT / "bench" / "results"))
CACHE = Path(os.environ.get("SEGANY_BENCH_CACHE", ROOT / ".cache" / "bench"))
PHOTOS = Path(os.environ.get("SEGANY_BENCH_PHOTOS", ROOT.parent / "shared" / "images"))
PHOTO_NAMES = ("truck", "dog", "groceries")


def conditions() -> dict[str, Any]:
    """What a figure was measured on: machine, threads and library versions."""
    import torch

    from runners.converted import installed_version

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "isa": next((name for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f" {name}" in flags), "other"),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "bentoml": installed_version("bentoml"),  # not imported: the GPU suite runs without it
    }


# A point and a box on the truck photo: each path's embedding is decoded with them by SAM's fp32
# decoder and the masks compared with eager fp32's (the encoder and GPU suites).
TRUCK_PROMPTS = {"point": dict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]), multimask_output=False),
                 "box": dict(box=np.array([425, 600, 700, 875]), multimask_output=False)}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def random_checkpoint(model_type: str) -> Path:
    """A random-init checkpoint of the official shape (seed 0), written once into CACHE."""
    from runners.models import write_checkpoint
    from runners.specs import get_spec

    path = CACHE / f"sam_{model_type}_random_seed0.pth"
    if not path.is_file():
        logger.info("writing random-init %s checkpoint to %s", model_type, path)
        write_checkpoint(get_spec(model_type), path)
    return path


def photo_bytes(name: str) -> bytes:
    return (PHOTOS / f"{name}.jpg").read_bytes()


def photo_rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / f"{name}.jpg").convert("RGB"))


def distinct_images(count: int, offset: int = 0) -> list[tuple[bytes, np.ndarray]]:
    """``count`` different JPEGs with their pixels: variant i is photo i % 3 with k % 200 rows
    cropped from the top and k // 200 columns from the left (k = i // 3), so every variant (and
    its cache key) is new to the server."""
    images = []
    for i in range(offset, offset + count):
        k = i // 3
        rgb = photo_rgb(PHOTO_NAMES[i % 3])[k % 200 :, k // 200 :]
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        images.append((data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
    return images


def calibration_folder(count: int = 16) -> Path:
    """``count`` JPEGs for int8 calibration: variants of the dog and groceries photos only, so
    the truck, on which the encoder suite checks masks, is never among them."""
    folder = CACHE / "calibration"
    if len(list(folder.glob("*.jpg"))) != count:
        folder.mkdir(parents=True, exist_ok=True)
        variants = [data for i, (data, _) in enumerate(distinct_images(2 * count, offset=3000)) if (3000 + i) % 3]
        for i, data in enumerate(variants[:count]):
            (folder / f"calibration-{i:03d}.jpg").write_bytes(data)
    return folder


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeat`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
        "min_s": ordered[0],
        "n": len(ordered),
    }


def embed_npy(client: Any, **request: Any) -> tuple[np.ndarray, Any]:
    """``POST /embed`` asking for the embedding as ``.npy``; ``request`` is httpx's (``json=`` or
    ``content=`` with its ``headers=``). The array and the response headers (``X-Segany-*``)."""
    from runners.schemas import NPY_MEDIA_TYPE

    response = client.post("/embed", **{**request, "headers": {**request.get("headers", {}), "accept": NPY_MEDIA_TYPE}})
    response.raise_for_status()
    return np.load(io.BytesIO(response.content), allow_pickle=False), response.headers


def write_result(suite: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{suite}.json"
    path.write_text(json.dumps({"suite": suite, "conditions": conditions(), **result}, indent=2) + "\n")
    logger.info("wrote %s", path)
    return path


def bench_env(model_type: str, checkpoint: Path, **extra: str) -> dict[str, str]:
    return {
        "SEGANY_MODEL": model_type,
        "SEGANY_CHECKPOINT": str(checkpoint),
        "SEGANY_CACHE_DIR": str(CACHE / "segany-cache"),
        "SEGANY_DEVICE": os.environ.get("SEGANY_DEVICE", "auto"),
        "BENTOML_DO_NOT_TRACK": "true",
        **extra,
    }


def reference_sam(model_type: str, checkpoint: Path):
    """The direct baseline: segment_anything's own builder and loader (tiny through its
    private _build_sam, which the official builders call with other dims)."""
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    if model_type in sam_model_registry:
        return sam_model_registry[model_type](checkpoint=str(checkpoint))
    from runners.specs import get_spec

    spec = get_spec(model_type)
    return _build_sam(spec.encoder_embed_dim, spec.encoder_depth, spec.encoder_num_heads,
                      list(spec.encoder_global_attn_indexes), checkpoint=str(checkpoint))
