"""Encoder throughput, all paths on the same random-init weights in one run.

Ours: the served ``/embed`` (default path, and the opt-in ``SEGANY_PRECISION=bf16`` fast
path) and the in-process encoder (the OpenVINO IR the server uses). Theirs: eager
``SamPredictor.set_image`` (fp32), samexporter's ONNX export run by ONNX Runtime, and the
same ONNX file run by OpenVINO at f32 and bf16 inference precision. Every path's
embedding of the truck photo also goes through SAM's decoder for a point and a box, and
the masks are compared with eager fp32's (IoU).
"""

from __future__ import annotations

import base64
import time
from typing import Callable

import httpx
import numpy as np
import torch

from bench.common import (
    CACHE,
    bench_env,
    conditions,
    distinct_images,
    logger,
    photo_bytes,
    photo_rgb,
    random_checkpoint,
    reference_sam,
    write_result,
)
from bench.peers import BareOpenVINOEncoder, OnnxRuntimeEncoder, samexporter_onnx
from bench.server import ServerProcess

PROMPTS = {"point": dict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]), multimask_output=False),
           "box": dict(box=np.array([425, 600, 700, 875]), multimask_output=False)}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def _per_second(fn: Callable[[np.ndarray], object], inputs: list[np.ndarray]) -> float:
    fn(inputs[0])  # warm-up
    start = time.perf_counter()
    for x in inputs[1:]:
        fn(x)
    return (len(inputs) - 1) / (time.perf_counter() - start)


def _preprocess(predictor, rgb: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The encoder's input for ``rgb``, as SamPredictor.set_image makes it: (1, 3, 1024, 1024)."""
    tensor = torch.as_tensor(predictor.transform.apply_image(rgb)).permute(2, 0, 1).contiguous()[None]
    with torch.inference_mode():
        return predictor.model.preprocess(tensor).numpy()


def _served(model_type: str, checkpoint, images: list[bytes], **env: str) -> tuple[float, np.ndarray]:
    """images/s of /embed one request at a time, and the truck photo's embedding."""
    server = ServerProcess(bench_env(model_type, checkpoint, **env), CACHE / f"encoder-{model_type}-served.log").start()
    try:
        server.wait_ready(timeout_s=3600)
        with httpx.Client(base_url=server.url, timeout=3600) as client:
            def embed(data: bytes) -> dict:
                response = client.post("/embed", json={"image": base64.b64encode(data).decode()})
                response.raise_for_status()
                return response.json()

            embed(images[0])  # warm-up
            start = time.perf_counter()
            for data in images[1:]:
                embed(data)
            rate = (len(images) - 1) / (time.perf_counter() - start)
            truck = embed(photo_bytes("truck"))["embedding"]
        return rate, np.frombuffer(base64.b64decode(truck["data"]), dtype="<f4").reshape(truck["shape"])
    finally:
        server.stop()


def measure(model_type: str, n_images: int) -> dict:
    from segment_anything import SamPredictor

    from runners.encoders import OpenVINOEncoder, converted_encoder

    checkpoint = random_checkpoint(model_type)
    predictor = SamPredictor(reference_sam(model_type, checkpoint))
    images = distinct_images(n_images, offset=1000)
    inputs = [_preprocess(predictor, rgb) for _, rgb in images]
    truck = photo_rgb("truck")
    predictor.set_image(truck)
    truck_input = _preprocess(predictor, truck)
    eager_features = predictor.features.clone()
    eager_masks = {kind: predictor.predict(**prompt)[0] for kind, prompt in PROMPTS.items()}

    def mask_iou(features: np.ndarray) -> dict[str, float]:
        predictor.features = torch.as_tensor(features).reshape(eager_features.shape)
        result = {kind: _iou(predictor.predict(**prompt)[0], eager_masks[kind]) for kind, prompt in PROMPTS.items()}
        predictor.features = eager_features
        return result

    rates: dict[str, float] = {}
    ious: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        rates["eager"] = _per_second(lambda x: predictor.model.image_encoder(torch.from_numpy(x)), inputs)
    ious["eager"] = {kind: 1.0 for kind in PROMPTS}
    logger.info("%s eager: %.4f img/s", model_type, rates["eager"])

    onnx = samexporter_onnx(model_type, checkpoint)
    peers = [OnnxRuntimeEncoder(onnx), BareOpenVINOEncoder(onnx, "f32"), BareOpenVINOEncoder(onnx, "bf16")]
    for peer in peers:
        rates[peer.name] = _per_second(peer, inputs)
        ious[peer.name] = mask_iou(peer(truck_input))
        logger.info("%s %s: %.4f img/s", model_type, peer.name, rates[peer.name])
    del peers

    converted = converted_encoder(CACHE / "segany-cache", checkpoint, None, model_type)
    for precision in ("fp32", "bf16"):
        ours = OpenVINOEncoder(converted, precision)
        name = "ours_in_process" + ("" if precision == "fp32" else "_bf16")
        rates[name] = _per_second(lambda x, run=ours: run(torch.from_numpy(x)), inputs)
        ious[name] = mask_iou(ours(torch.from_numpy(truck_input)).numpy())
        logger.info("%s %s: %.4f img/s", model_type, name, rates[name])

    jpegs = [data for data, _ in images]
    for name, env in (("ours_served", {}), ("ours_served_bf16", {"SEGANY_PRECISION": "bf16"})):
        rates[name], features = _served(model_type, checkpoint, jpegs, **env)
        ious[name] = mask_iou(features)
        logger.info("%s %s: %.4f img/s", model_type, name, rates[name])

    served, fast = rates["ours_served"], rates["ours_served_bf16"]
    return {
        "images_per_s": rates,
        "mask_iou_vs_eager_fp32": ious,
        "vs_eager": served / rates["eager"],
        "vs_onnxruntime": served / rates["onnxruntime"],
        "vs_openvino_f32": served / rates["openvino_f32"],
        "vs_openvino_bf16": fast / rates["openvino_bf16"],
        "in_process_vs_openvino_f32": rates["ours_in_process"] / rates["openvino_f32"],
    }


def run(model_types: tuple[str, ...] = ("vit_b", "vit_h"), n_images: int = 4) -> dict:
    results = {model_type: measure(model_type, n_images) for model_type in model_types}
    cpu = conditions()
    write_result("encoder", {
        "device": "cpu",
        "models": results,
        "bf16_native": cpu["avx512_bf16"],
        "goals": {"vs_openvino_f32": ">= 0.95 (aim 1.0)", "vs_openvino_bf16": ">= 1.0", "mask_iou": ">= 0.999 default, >= 0.98 bf16"},
    })
    return results
