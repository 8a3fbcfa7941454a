"""Small helpers for talking to the server in tests, as a client would."""

from __future__ import annotations

import base64
import re

import httpx
import numpy as np

from runners.outputs import decode_rle
from runners.schemas import ArrayPayload
from tests.photos import photo_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def photo_b64(name: str) -> str:
    return b64(photo_bytes(name))


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text[:2000]
    return response.json()


def error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response's error object, after checking the status and the JSON shape."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    assert body["error"]["message"].strip(), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def result_masks(result: dict) -> np.ndarray:
    """(C, H, W) bool masks of one prompt's result in rle output."""
    return np.stack([decode_rle(mask["segmentation"]) for mask in result["masks"]])


def result_scores(result: dict) -> np.ndarray:
    return np.array([mask["score"] for mask in result["masks"]], dtype=np.float32)


def array(payload: dict) -> np.ndarray:
    return ArrayPayload(**payload).to_numpy()


def batch_counts(metrics_text: str, method: str = "encode") -> dict[str, float]:
    """Cumulative bucket counts of BentoML's adaptive-batch-size histogram for ``method``."""
    counts: dict[str, float] = {}
    pattern = re.compile(r'^bentoml_service_adaptive_batch_size_bucket\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if match and f'method_name="{method}"' in match["labels"]:
            le = re.search(r'le="([^"]+)"', match["labels"])[1]
            counts[le] = counts.get(le, 0.0) + float(match["value"])
    return counts


def batches_formed(api: httpx.Client) -> tuple[float, float]:
    """(number of encoder batches so far, how many of them had more than one image)."""
    counts = batch_counts(api.get("/metrics").text)
    total = counts.get("+Inf", 0.0)
    return total, total - counts.get("1.0", 0.0)
