"""Encoder throughput, all paths on the same random-init weights in one run, measured in pairs.

Ours: the served ``/embed`` (default path, and the opt-in fast paths ``SEGANY_PRECISION=bf16``
and ``int8``, the latter calibrated on 16 variants of the dog and groceries photos, never the
truck its masks are checked on) and the in-process encoder (the OpenVINO IR the server uses). Theirs: eager
``SamPredictor.set_image`` (fp32), samexporter's ONNX export run by ONNX Runtime, and the
same ONNX file run by OpenVINO at f32 and bf16 inference precision.

Shared 2-core machines drift by 10-15% over minutes, which is more than the differences
measured here, so every peer is timed in a pair with the served ``/embed``: the server stays
up, and each image goes through both paths back to back (in alternating order) before the
next, each pair on images new to the server's embedding cache. A ratio is the peer's total
seconds over ours in the same pair. Ours sends the JPEG as the body and takes the embedding
as ``.npy`` (the transport README's ``/embed`` section gives for speed; base64 JSON adds about
40 ms of encoding and decoding 4 MiB per image, 3% of a bf16 vit_b image on a CPU with AMX), and
includes every serving cost: HTTP, JPEG decoding, resizing, normalising; the peers start from the
preprocessed tensor. Every path's embedding of the truck photo also goes
through SAM's decoder for a point and a box, and the masks are compared with eager fp32's
(IoU).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Callable, Iterator

import httpx
import numpy as np
import torch

from bench.common import (
    CACHE,
    RESULTS,
    TRUCK_PROMPTS,
    bench_env,
    calibration_folder,
    conditions,
    distinct_images,
    embed_npy,
    logger,
    mask_iou as iou_of,
    photo_bytes,
    photo_rgb,
    random_checkpoint,
    reference_sam,
    write_result,
)
from bench.peers import BareOpenVINOEncoder, OnnxRuntimeEncoder, samexporter_onnx
from bench.server import ServerProcess

TRANSPORT = "the JPEG as the request body, the embedding as a .npy response (Accept: application/x-npy)"
PROMPTS = TRUCK_PROMPTS

Run = Callable[[int], object]  # runs one path's encoder on image i


def _seconds(fn: Run, i: int) -> float:
    start = time.perf_counter()
    fn(i)
    return time.perf_counter() - start


def paired_seconds(ours: Run, theirs: Run, count: int) -> tuple[list[float], list[float]]:
    """Seconds per image of ``ours`` and ``theirs`` on images 1..count-1, each image through
    both back to back, the order alternating; image 0 warms ``theirs`` up (``ours`` is warm)."""
    theirs(0)
    ours_s, theirs_s = [], []
    for i in range(1, count):
        if i % 2:
            theirs_s.append(_seconds(theirs, i))
            ours_s.append(_seconds(ours, i))
        else:
            ours_s.append(_seconds(ours, i))
            theirs_s.append(_seconds(theirs, i))
    return ours_s, theirs_s


def _preprocess(predictor, rgb: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The encoder's input for ``rgb``, as SamPredictor.set_image makes it: (1, 3, 1024, 1024)."""
    tensor = torch.as_tensor(predictor.transform.apply_image(rgb)).permute(2, 0, 1).contiguous()[None]
    with torch.inference_mode():
        return predictor.model.preprocess(tensor).numpy()


@contextlib.contextmanager
def served(model_type: str, checkpoint, **env: str) -> Iterator[Callable[[bytes], np.ndarray]]:
    """A running server's ``/embed``: JPEG bytes -> the embedding; warmed up with one image."""
    server = ServerProcess(bench_env(model_type, checkpoint, **env), CACHE / f"encoder-{model_type}-served.log").start()
    try:
        server.wait_ready(timeout_s=3600)
        with httpx.Client(base_url=server.url, timeout=3600) as client:
            seen: set[str] = set()

            def embed(data: bytes) -> np.ndarray:  # as TRANSPORT says
                embedding, headers = embed_npy(client, content=data, headers={"content-type": "image/jpeg"})
                if headers["x-segany-image-id"] in seen:
                    raise RuntimeError("an image was sent twice: the server answered from its cache, not its encoder")
                seen.add(headers["x-segany-image-id"])
                return embedding

            embed(photo_bytes("dog"))  # warm-up (the measured images are all new to its cache)
            yield embed
    finally:
        server.stop()


def measure(model_type: str, n_images: int, only: tuple[str, ...] | None = None) -> dict:
    """The pairs of ``model_type`` (all, or the peers named in ``only``) and the mask IoUs."""
    from segment_anything import SamPredictor

    from runners.converted import converted_encoder
    from runners.encoders import OpenVINOEncoder

    checkpoint = random_checkpoint(model_type)
    calibration = calibration_folder()
    if only is None or "int8_vs_openvino_bf16" in only:  # first, while this process is small (vit_h: ~20 GB)
        converted_encoder(CACHE / "segany-cache", checkpoint, None, model_type, int8_calibration=calibration)
    predictor = SamPredictor(reference_sam(model_type, checkpoint))
    truck = photo_rgb("truck")
    predictor.set_image(truck)
    truck_input = _preprocess(predictor, truck)
    eager_features = predictor.features.clone()
    eager_masks = {kind: predictor.predict(**prompt)[0] for kind, prompt in PROMPTS.items()}

    def mask_iou(features: np.ndarray) -> dict[str, float]:
        predictor.features = torch.as_tensor(features).reshape(eager_features.shape)
        result = {kind: iou_of(predictor.predict(**prompt)[0], eager_masks[kind]) for kind, prompt in PROMPTS.items()}
        predictor.features = eager_features
        return result

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return predictor.model.image_encoder(torch.from_numpy(x)).numpy()

    onnx = samexporter_onnx(model_type, checkpoint)
    converted = converted_encoder(CACHE / "segany-cache", checkpoint, None, model_type)
    peers: dict[str, tuple[str, Callable[[], Callable[[np.ndarray], np.ndarray]]]] = {
        "eager": ("ours_served", lambda: eager),
        "onnxruntime": ("ours_served", lambda: OnnxRuntimeEncoder(onnx)),
        "openvino_f32": ("ours_served", lambda: BareOpenVINOEncoder(onnx, "f32")),
        "ours_in_process": ("ours_served", lambda: _numpy(OpenVINOEncoder.from_converted(converted, "fp32"))),
        "openvino_bf16": ("ours_served_bf16", lambda: BareOpenVINOEncoder(onnx, "bf16")),
        "int8_vs_openvino_bf16": ("ours_served_int8", lambda: BareOpenVINOEncoder(onnx, "bf16")),
    }
    servers = (("ours_served", {}), ("ours_served_bf16", {"SEGANY_PRECISION": "bf16"}),
               ("ours_served_int8", {"SEGANY_PRECISION": "int8", "SEGANY_INT8_CALIBRATION": str(calibration)}))
    pairs: dict[str, dict] = {}
    ious: dict[str, dict[str, float]] = {"eager": {kind: 1.0 for kind in PROMPTS}}
    for ours, env in servers:
        todo = [name for name, (against, _) in peers.items() if against == ours and (only is None or name in only)]
        if not todo:
            continue
        with served(model_type, checkpoint, **env) as embed:
            ious[ours] = mask_iou(embed(photo_bytes("truck")))
            for name in todo:
                peer = peers[name][1]()
                images = distinct_images(n_images, offset=1000 + 100 * list(peers).index(name))
                jpegs = [data for data, _ in images]
                inputs = [_preprocess(predictor, rgb) for _, rgb in images]
                ours_s, theirs_s = paired_seconds(lambda i: embed(jpegs[i]), lambda i, p=peer: p(inputs[i]), n_images)
                pairs[name] = {"ours": ours, "ours_s": ours_s, "theirs_s": theirs_s}
                ious[name] = mask_iou(peer(truck_input))
                logger.info("%s %s: %.1f s/img vs %s %.1f s/img (%.2fx)", model_type, name, np.mean(theirs_s), ours,
                            np.mean(ours_s), sum(theirs_s) / sum(ours_s))
                del peer
    return {"pairs": pairs, "mask_iou_vs_eager_fp32": ious}


def summarize(entry: dict) -> dict:
    """Rates and ratios from the pairs: a ratio is the peer's seconds over ours in its pair
    (ours per second over theirs); our rate counts every pair our server took part in."""
    pairs = entry["pairs"]
    rates = {name: len(pair["theirs_s"]) / sum(pair["theirs_s"]) for name, pair in pairs.items()}
    for ours in {pair["ours"] for pair in pairs.values()}:
        mine = [s for pair in pairs.values() if pair["ours"] == ours for s in pair["ours_s"]]
        rates[ours] = len(mine) / sum(mine)
    ratio = {name: sum(pair["theirs_s"]) / sum(pair["ours_s"]) for name, pair in pairs.items()}
    return {**entry, "images_per_s": rates, "vs_eager": ratio["eager"], "vs_onnxruntime": ratio["onnxruntime"],
            "vs_openvino_f32": ratio["openvino_f32"], "vs_openvino_bf16": ratio["openvino_bf16"],
            "int8_vs_openvino_bf16": ratio["int8_vs_openvino_bf16"],
            "served_vs_in_process": ratio["ours_in_process"]}


def _numpy(encoder: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: encoder(torch.from_numpy(x)).numpy()


METHOD = "paired: each peer timed image by image alternately with the served /embed"


def run(model_types: tuple[str, ...] = ("vit_b", "vit_h"), n_images: int = 4, only: tuple[str, ...] | None = None) -> dict:
    """Measure ``model_types`` and write encoder.json. Shapes not measured now keep their figures
    from the previous run if it used the same method (``--encoder-models vit_b`` re-measures one
    shape), and ``only`` re-measures just the named pairs of a shape, keeping its others (on the same
    machine, please: a shape's entry records the conditions of its latest run)."""
    previous = RESULTS / "encoder.json"
    models = json.loads(previous.read_text())["models"] if previous.exists() else {}
    models = {name: figures for name, figures in models.items() if figures.get("method") == METHOD}
    for model_type in model_types:
        fresh = measure(model_type, n_images, only)
        entry = models.get(model_type, {}) if only else {}
        pairs = {**entry.get("pairs", {}), **fresh["pairs"]}
        ious = {**entry.get("mask_iou_vs_eager_fp32", {}), **fresh["mask_iou_vs_eager_fp32"]}
        dates = {**entry.get("dates", {}), **{name: time.strftime("%Y-%m-%d %H:%M") for name in fresh["pairs"]}}
        models[model_type] = summarize({"method": METHOD, "transport": TRANSPORT, "conditions": conditions(), "pairs": pairs,
                                        "mask_iou_vs_eager_fp32": ious, "dates": dates})
        write_result("encoder", {  # after each shape: a later one that fails keeps this one's figures
            "device": "cpu",
            "models": models,
            "bf16_native": conditions()["avx512_bf16"],
            "goals": {"vs_openvino_f32": ">= 0.95 (aim 1.0)", "vs_openvino_bf16": ">= 1.0", "int8_vs_openvino_bf16": ">= 1.0",
                      "mask_iou": ">= 0.999 default, >= 0.98 fast paths (bf16, int8)"},
        })
    return models
