"""GPU suite: the image encoder as the server runs it on CUDA against SAM's eager encoder and
segment-anything-fast, per model shape and batch size, on the same random-init weights in one
process (``python -m bench gpu``; bench/device/run.sh runs it, and the served batching suite, on
a lent GPU in one call).

Paths:
- ``eager_fp32``: SAM's ``ImageEncoderViT`` unmodified, float32: the reference for masks.
- ``eager_bf16``: the same under ``torch.autocast(bfloat16)``.
- ``ours``: the torch engine exactly as ``SEGANY_DEVICE=cuda`` loads it (runners/torch_loading.py):
  bf16 autocast, attention in ``scaled_dot_product_attention`` with the relative-position mask,
  windowed blocks' linear layers on the real tokens only.
- ``ours_compiled``: that encoder under ``torch.compile`` (``--compile-mode``).
- ``sam_fast_eager`` / ``sam_fast``: pytorch-labs' segment-anything-fast, bf16 weights and its
  Triton attention kernel, without and with ``torch.compile`` (its own default mode,
  max-autotune). Installed from source (bench/device/prepare.sh): PyPI's "segment-anything-fast"
  is FastSAM, another model.

Every path's embedding of the truck photo goes through SAM's fp32 decoder for a point and a box,
and the masks are compared with eager fp32's (IoU). Rows are written to bench/results/gpu.json as
they are measured (``"complete": false`` until the last), so a run cut short by the device's time
limit keeps what it measured; compiled paths come last. Without CUDA the suite runs on CPU
(``--gpu-models tiny --gpu-batches 1 2``, the tests' smoke run): that checks the code, not speed.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
from typing import Callable

import numpy as np
import torch

from bench.common import CACHE, TRUCK_PROMPTS, mask_iou, photo_rgb, random_checkpoint, reference_sam, write_result
from bench.report import best_batch

logger = logging.getLogger("bench.gpu")

EAGER_PATHS = ("eager_fp32", "eager_bf16", "ours", "sam_fast_eager")
COMPILED_PATHS = ("ours_compiled", "sam_fast")
REFERENCE_BATCHES = (1, 8)  # eager fp32 is the reference, not a contender: two sizes are enough
# segment-anything-fast's README: images/s of its encoder on an A100, batch 8-32.
PUBLISHED = {"vit_h": (22.0, 25.0), "vit_b": (66.0, 95.0)}
PROMPTS = TRUCK_PROMPTS

Encode = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, 1024, 1024) float32 -> (B, 256, 64, 64) float32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(encode: Encode, batch: torch.Tensor, min_calls: int = 3, min_seconds: float = 1.0) -> list[float]:
    """Wall seconds of calls (after the caller's warm-up), at least ``min_calls`` and ``min_seconds``."""
    times: list[float] = []
    while len(times) < min_calls or sum(times) < min_seconds:
        start = time.perf_counter()
        encode(batch)
        sync(batch.device)
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break
    return times


def _autocast(module: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> Encode:
    def encode(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return module(batch.to(next(module.parameters()).dtype)).float()

    return encode


def build(path: str, model_type: str, checkpoint, reference: Reference, compile_mode: str) -> Encode:
    """One path's encoder; raises ImportError when segment-anything-fast is not installed."""
    device = reference.device
    if path in ("eager_fp32", "eager_bf16"):
        return _autocast(reference.model.image_encoder, device, torch.bfloat16 if path == "eager_bf16" else None)
    if path in ("ours", "ours_compiled"):
        from runners.settings import Settings
        from runners.torch_loading import load_torch_engine

        settings = Settings(model_type=model_type, checkpoint=str(checkpoint), device=device.type, encoder="torch",
                            precision="bf16", attention="sdpa", cache_dir=CACHE / "segany-cache")
        engine = load_torch_engine(settings, None).engine
        if path == "ours":
            return engine.encode
        return _autocast(torch.compile(engine.model.image_encoder, mode=compile_mode), device, torch.bfloat16)
    # ImportError when not installed (bench/device/prepare.sh); the package exports a function
    # of the module's name, hence import_module
    build_sam = importlib.import_module("segment_anything_fast.build_sam")

    if model_type not in build_sam.sam_model_registry:
        raise ImportError(f"segment-anything-fast has no {model_type} model")
    if path == "sam_fast":
        model = build_sam.sam_model_fast_registry[model_type](checkpoint=str(checkpoint))  # bf16, compiled
    else:
        model = build_sam._apply_eval_dtype_sam(build_sam.sam_model_registry[model_type](checkpoint=str(checkpoint)), torch.bfloat16)
    return _autocast(model.to(device).image_encoder, device, None)


class Reference:
    """segment_anything's own model on the device: the eager paths' encoder, the photos'
    preprocessing, and the fp32 decoder whose masks for PROMPTS on the truck compare the paths."""

    def __init__(self, model_type: str, checkpoint, device: torch.device) -> None:
        from segment_anything import SamPredictor

        self.device = device
        self.model = reference_sam(model_type, checkpoint).to(device).eval()
        self.predictor = SamPredictor(self.model)
        self.predictor.set_image(photo_rgb("truck"))
        self.input = self.inputs(1)
        self.reference = self.masks(self.predictor.features)

    def inputs(self, batch_size: int) -> torch.Tensor:
        """``batch_size`` photos (truck, dog, groceries, cycled) as ``set_image`` hands them to the
        encoder: (B, 3, 1024, 1024) float32 on the device."""
        from runners.sam import prepare_image

        photos = [prepare_image(self.model, self.predictor.transform, photo_rgb(name), self.device).tensor
                  for name in ("truck", "dog", "groceries")]
        return torch.stack([photos[i % 3] for i in range(batch_size)])

    def masks(self, features: torch.Tensor) -> dict[str, np.ndarray]:
        self.predictor.features = features.float()
        return {kind: self.predictor.predict(**prompt)[0] for kind, prompt in PROMPTS.items()}

    def iou(self, encode: Encode) -> dict[str, float]:
        ours = self.masks(encode(self.input))
        return {kind: mask_iou(ours[kind], reference) for kind, reference in self.reference.items()}


def sizes_for(path: str, batches: tuple[int, ...]) -> tuple[int, ...]:
    """The reference at REFERENCE_BATCHES; a compiled path at the smallest and largest batch only
    (each new size compiles again: minutes with max-autotune)."""
    if path == "eager_fp32":
        return tuple(b for b in batches if b in REFERENCE_BATCHES)
    if path in COMPILED_PATHS:
        return tuple(sorted({min(batches), max(batches)}))
    return batches


def measure_path(path: str, model_type: str, checkpoint, reference: Reference, batches: tuple[int, ...],
                 compile_mode: str, record: Callable[[dict], None], min_calls: int = 3) -> None:
    """``min_calls`` timed calls per size after the first (set-up) call and a warm-up call; with 1
    (a CPU rehearsal of the code, not a measurement) the first call is the only warm-up."""
    device = reference.device
    entry: dict = {"batches": {}}
    try:
        encode = build(path, model_type, checkpoint, reference, compile_mode)
    except ImportError as exc:
        record({"skipped": str(exc)})
        return
    except Exception as exc:  # noqa: BLE001 (a peer failing to build must not end the device's one run)
        logger.exception("%s %s could not be built", model_type, path)
        record({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    for size in sizes_for(path, batches):
        try:
            batch = reference.inputs(size)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            encode(batch)  # the first call: compilation, autotuning, cuDNN/cuBLAS set-up
            sync(device)
            first = time.perf_counter() - start
            if min_calls > 1:
                encode(batch)
            times = seconds_per_call(encode, batch, min_calls=min_calls, min_seconds=1.0 if min_calls > 1 else 0.0)
            median = float(np.median(times))
            entry["batches"][str(size)] = {
                "images_per_s": size / median, "median_s": median, "calls": len(times), "first_call_s": first,
                "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            }
            logger.info("%s %s batch %d: %.1f img/s (first call %.1f s)", model_type, path, size, size / median, first)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:  # one size failing keeps the others
            entry["batches"][str(size)] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            logger.warning("%s %s batch %d failed: %s", model_type, path, size, exc)
        finally:
            batch = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        record(entry)
    try:
        entry["mask_iou_vs_eager_fp32"] = reference.iou(encode)
    except RuntimeError as exc:
        entry["mask_iou_vs_eager_fp32"] = {"error": str(exc)[:300]}
    record(entry)
    del encode
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def best(paths: dict, *names: str) -> float | None:
    """The best images/s measured among ``names`` paths, any batch size."""
    found = best_batch(paths, names)
    return found[2] if found else None


def ratios(paths: dict) -> dict[str, float]:
    """Ours against each path, best batch against best batch, and batching's gain for ours."""
    result: dict[str, float] = {}
    ours = best(paths, "ours", "ours_compiled")
    for name in paths if ours else ():
        theirs = best(paths, name)
        if theirs and not name.startswith("ours"):
            result[f"ours_best_vs_{name}_best"] = ours / theirs
    ours_batches = paths.get("ours", {}).get("batches", {})
    if "images_per_s" in ours_batches.get("1", {}) and best(paths, "ours"):
        result["ours_best_batch_vs_batch_1"] = best(paths, "ours") / ours_batches["1"]["images_per_s"]
    return result


def run(model_types: tuple[str, ...] = ("vit_b", "vit_h"), batches: tuple[int, ...] = (1, 8, 16, 32),
        compile_mode: str = "default", paths: tuple[str, ...] = EAGER_PATHS + COMPILED_PATHS, name: str = "gpu",
        min_calls: int = 3) -> dict:
    """Measure ``paths`` for each model shape; results in bench/results/NAME.json."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke run: code, not speed)",
                    "batches": list(batches), "compile_mode": compile_mode, "min_calls": min_calls, "complete": False, "models": {},
                    "published_segment_anything_fast_a100_images_per_s": {k: list(v) for k, v in PUBLISHED.items()}}
    references: dict[str, Reference] = {}
    ordered = [p for p in EAGER_PATHS if p in paths] + [p for p in COMPILED_PATHS if p in paths]
    for compiled in (False, True):
        for model_type in model_types:
            checkpoint = random_checkpoint(model_type)
            models = result["models"].setdefault(model_type, {"paths": {}, "ratios": {}})
            for path in [p for p in ordered if (p in COMPILED_PATHS) == compiled]:
                if model_type not in references:  # (vit_h's stays while vit_b's compiled paths run: 2.5 GB)
                    references[model_type] = Reference(model_type, checkpoint, device)

                def record(entry: dict, path: str = path) -> None:  # noqa: B023 (models: this model's)
                    models["paths"][path] = entry
                    models["ratios"] = ratios(models["paths"])
                    write_result(name, result)

                measure_path(path, model_type, checkpoint, references[model_type], batches, compile_mode, record,
                             min_calls)
    for model_type, models in result["models"].items():
        ours = best(models["paths"], "ours")
        if ours and model_type in PUBLISHED:
            models["ratios"]["ours_best_vs_published_a100_low"] = ours / PUBLISHED[model_type][0]
    result["complete"] = True
    write_result(name, result)
    return result
