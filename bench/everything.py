"""Segment-everything latency per image, points_per_side 32: our /segment_everything against
SamAutomaticMaskGenerator.generate on the same weights, with their instances compared.

Two figures per photo: the whole request for a new image (encoder included, as
``generate`` always encodes), and decoding alone on a cached embedding (ours by
``image_id``; theirs with the predictor's features preset). Two threshold regimes: SAM's
defaults (random weights keep almost nothing, so this mostly measures the work done on
masks that are then dropped) and open thresholds (everything survives; the work on kept
masks)."""

from __future__ import annotations

import base64
import time

import httpx

from bench.common import CACHE, bench_env, logger, mask_iou, photo_bytes, photo_rgb, random_checkpoint, reference_sam, write_result
from bench.server import ServerProcess

REGIMES = {
    "defaults": {"points_per_side": 32},
    "open": {"points_per_side": 32, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.7},
}


def _compare(ours: list[dict], theirs: list[dict]) -> dict:
    from pycocotools import mask as mask_utils

    ious = [mask_iou(mask_utils.decode(a["segmentation"]), mask_utils.decode(b["segmentation"])) for a, b in zip(ours, theirs)]
    return {"count_ours": len(ours), "count_theirs": len(theirs), "min_iou": min(ious, default=1.0)}


def run(model_type: str = "vit_b", photos: tuple[str, ...] = ("dog",)) -> dict:
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    checkpoint = random_checkpoint(model_type)
    results: dict = {}
    server = ServerProcess(bench_env(model_type, checkpoint), CACHE / f"everything-{model_type}.log").start()
    try:
        server.wait_ready(timeout_s=3600)
        with httpx.Client(base_url=server.url, timeout=7200) as client:
            for name in photos:
                for regime, params in REGIMES.items():
                    # trailing bytes after the JPEG's end: same pixels, a new image_id, so the encoder runs
                    image = base64.b64encode(photo_bytes(name) + regime.encode()).decode()
                    start = time.perf_counter()
                    body = client.post("/segment_everything", json={"image": image, **params, "output": "rle"})
                    body.raise_for_status()
                    full_s = time.perf_counter() - start
                    start = time.perf_counter()
                    client.post("/segment_everything", json={"image_id": body.json()["image_id"], **params}).raise_for_status()
                    cached_s = time.perf_counter() - start
                    results.setdefault(name, {})[regime] = {"ours_full_s": full_s, "ours_cached_s": cached_s,
                                                            "ours": body.json()["instances"]}
    finally:
        server.stop()
    sam = reference_sam(model_type, checkpoint)
    for name in photos:
        rgb = photo_rgb(name)
        for regime, params in REGIMES.items():
            generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **params)
            start = time.perf_counter()
            theirs = generator.generate(rgb)
            full_s = time.perf_counter() - start
            preset = SamPredictor(sam)
            preset.set_image(rgb)
            generator.predictor = preset
            preset.set_image = lambda *_a, **_k: None  # keep the embedding: decoding alone
            preset.reset_image = lambda: None
            start = time.perf_counter()
            generator.generate(rgb)
            cached_s = time.perf_counter() - start
            entry = results[name][regime]
            entry.update(theirs_full_s=full_s, theirs_cached_s=cached_s, **_compare(entry.pop("ours"), theirs),
                         speedup_full=full_s / entry["ours_full_s"], speedup_cached=cached_s / entry["ours_cached_s"])
            logger.info("everything %s %s: %.1fx whole request, %.1fx decoding (%d instances)", name, regime,
                        entry["speedup_full"], entry["speedup_cached"], entry["count_ours"])
    write_result(f"everything-{model_type}", {"model": model_type, "device": "cpu", "photos": results,
                                              "goals": {"speedup": ">= 1.5 with equal instances (IoU >= 0.99)"}})
    return results
