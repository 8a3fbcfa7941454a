"""Adaptive batching: concurrent /embed requests share encoder forwards, and the
embeddings do not depend on the batch they ran in."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image
from segment_anything import SamPredictor

from tests.client import array, b64, batches_formed, ok
from tests.photos import small_photo_png


def test_concurrent_embeds_form_batches_with_the_same_embeddings(api, server, reference_model):
    images = [small_photo_png(name, side) for name in ("dog", "truck") for side in (224, 256, 288, 320)]

    def embed(data: bytes) -> dict:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            return ok(client.post("/embed", json={"image": b64(data)}))

    embed(small_photo_png("groceries", 200))  # a server's first image primes the batcher (11 no-op calls)
    total_before, multi_before = batches_formed(api)

    with ThreadPoolExecutor(len(images)) as pool:
        bodies = list(pool.map(embed, images))
    total_after, multi_after = batches_formed(api)
    assert multi_after > multi_before, "no batch larger than 1 formed"
    assert total_after - total_before < len(images)  # fewer encoder forwards than images

    predictor = SamPredictor(reference_model)
    for data, body in zip(images, bodies):
        predictor.set_image(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))  # one by one
        one_by_one = predictor.get_image_embedding().numpy()
        assert np.abs(array(body["embedding"]) - one_by_one).max() <= 1e-4
