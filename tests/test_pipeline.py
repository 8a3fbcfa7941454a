"""The pipeline's batch function, driven in-process by a stand-in for BentoML's batcher."""

from __future__ import annotations

import asyncio
import time

import anyio.to_thread
import pytest
import torch

from runners.pipeline import Pipeline
from runners.settings import Settings
from tests.photos import photo_rgb


def make_pipeline(tmp_path, tiny_checkpoint, stacking: str) -> Pipeline:
    settings = Settings(model_type="tiny", checkpoint=str(tiny_checkpoint), cache_dir=tmp_path,
                        device="cpu", encoder="torch", batch_stacking=stacking, warmup="off")
    pipeline = Pipeline(settings)
    pipeline._batcher_primed = True  # the stand-in below is not BentoML's batcher: nothing to prime
    pipeline.load()
    return pipeline


class TwoAtATime:
    """Like BentoML's batcher: collects tickets until two wait, runs them as one batch in a
    thread, and answers every caller when the whole batch is done."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline, self.waiting, self.batch_done_at = pipeline, [], None
        self.done = asyncio.Event()

    async def __call__(self, tickets: list[str]) -> list[str]:
        self.waiting.extend(tickets)
        if len(self.waiting) == 2:
            await anyio.to_thread.run_sync(self.pipeline.encode_staged, list(self.waiting))
            self.batch_done_at = time.perf_counter()
            self.done.set()
        await self.done.wait()
        return ["encoded"]


async def encode_two(pipeline: Pipeline):
    batcher = TwoAtATime(pipeline)
    images = [pipeline.engine.prepare(photo_rgb(name)) for name in ("dog", "groceries")]
    finished: list[float] = []

    async def one(prepared):
        embedding = await pipeline._encode(prepared, batcher)
        finished.append(time.perf_counter())
        return embedding

    embeddings = await asyncio.gather(*(one(p) for p in images))
    await batcher.done.wait()  # in sequential mode both callers may be answered before the batch returns
    return images, embeddings, finished, batcher.batch_done_at


@pytest.mark.parametrize("stacking", ["stack", "sequential"])
def test_both_modes_give_the_one_by_one_embeddings(tmp_path, tiny_checkpoint, stacking):
    pipeline = make_pipeline(tmp_path, tiny_checkpoint, stacking)
    images, embeddings, _, _ = asyncio.run(encode_two(pipeline))
    for prepared, embedding in zip(images, embeddings):
        alone = pipeline.engine.embed([prepared])[0]
        assert torch.abs(alone.features - embedding.features).max() <= 1e-4


def test_sequential_mode_hands_back_the_first_image_before_the_batch_ends(tmp_path, tiny_checkpoint):
    pipeline = make_pipeline(tmp_path, tiny_checkpoint, "sequential")
    prepared = pipeline.engine.prepare(photo_rgb("dog"))
    start = time.perf_counter()
    pipeline.engine.embed([prepared])
    one_image_s = time.perf_counter() - start
    _, _, finished, batch_done_at = asyncio.run(encode_two(pipeline))
    # the first image was answered while the second was still being encoded
    assert batch_done_at - min(finished) > 0.5 * one_image_s


def test_unknown_tickets_are_reported_not_fatal(tmp_path, tiny_checkpoint):
    pipeline = make_pipeline(tmp_path, tiny_checkpoint, "stack")
    assert pipeline.encode_staged(["nope", "neither"]) == ["unknown", "unknown"]
