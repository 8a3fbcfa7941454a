"""BentoML's adaptive batcher must not hold a lone request back while it trains.

Its CorkDispatcher fits a latency model on its first 11 calls, and holds the 10th and 11th
back waiting for a batch of 2 and 3 (about three times its estimate of one call: 13-17 s on
vit_b). The pipeline finishes that training with no-op tickets before the first image
(runners/pipeline.py, ``_prime_batcher``). These tests run BentoML's real dispatcher with a
stand-in encoder of 0.2 s per image and one client sending images one after another.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from bentoml._internal.marshal.dispatcher import CorkDispatcher

from runners.pipeline import BATCHER_TRAINING_CALLS, Pipeline
from runners.settings import Settings

ENCODER_S = 0.2


def _held_back_s(prime: bool) -> list[float]:
    """Seconds each of 12 sequential images waited beyond its own encoder time."""

    async def scenario() -> list[float]:
        dispatcher = CorkDispatcher(300_000, 8, fallback=lambda: None, get_batch_size=len)
        calls: list[list[str]] = []

        async def encode(batches: tuple[list[str], ...]) -> list[list[str]]:
            calls.extend(batches)
            real = [ticket for batch in batches for ticket in batch if not ticket.startswith("prime-")]
            await asyncio.sleep(ENCODER_S * len(real))
            return [["encoded" if not t.startswith("prime-") else "unknown" for t in batch] for batch in batches]

        encode_batch = dispatcher(encode)
        pipeline = Pipeline(Settings())
        if prime:
            await pipeline._prime_batcher(encode_batch)
            await pipeline._prime_batcher(encode_batch)  # once only
            assert calls == [[f"prime-{i}"] for i in range(BATCHER_TRAINING_CALLS)]
        held = []
        for i in range(12):
            start = time.perf_counter()
            assert await encode_batch([f"image-{i}"]) == ["encoded"]
            held.append(time.perf_counter() - start - ENCODER_S)
        dispatcher.shutdown()
        return held

    return asyncio.run(scenario())


def test_without_priming_bentoml_holds_a_lone_request_back_while_it_trains():
    held = _held_back_s(prime=False)
    assert max(held) >= 0.25, held  # the mechanism the priming exists for (about 3 x 0.1 s)


def test_after_priming_no_request_is_held_back():
    held = _held_back_s(prime=True)
    assert max(held) < 0.1, held


def test_the_first_requests_prime_once_even_when_they_arrive_together():
    async def scenario() -> list[list[str]]:
        calls: list[list[str]] = []

        async def encode_batch(tickets: list[str]) -> list[str]:
            calls.append(tickets)
            await asyncio.sleep(0.001)
            return ["unknown" for _ in tickets]

        pipeline = Pipeline(Settings())
        await asyncio.gather(*(pipeline._prime_batcher(encode_batch) for _ in range(3)))
        return calls

    assert asyncio.run(scenario()) == [[f"prime-{i}"] for i in range(BATCHER_TRAINING_CALLS)]


def test_no_priming_when_batching_is_off():
    assert Pipeline(Settings(max_batch_size=1))._batcher_primed


def test_a_failing_priming_call_never_fails_the_request():
    async def scenario() -> int:
        calls = 0

        async def encode_batch(tickets: list[str]) -> list[str]:
            nonlocal calls
            calls += 1
            raise RuntimeError("process is overloaded")

        pipeline = Pipeline(Settings())
        await pipeline._prime_batcher(encode_batch)
        await pipeline._prime_batcher(encode_batch)
        assert pipeline._batcher_primed
        return calls

    assert asyncio.run(scenario()) == 1  # tried once, not on every request


def test_a_request_the_batcher_sheds_is_a_503_that_says_why():
    """BentoML's dispatcher answers a call it expects to wait past max_latency_ms with its
    ServiceUnavailable (seen at concurrency 16 on a slow CPU): the client gets our 503
    overloaded error with the setting to change, not a 500."""
    from bentoml.exceptions import ServiceUnavailable

    from runners.errors import Overloaded
    from runners.sam import PreparedImage

    async def encode_batch(tickets: list[str]) -> list[str]:
        raise ServiceUnavailable("Service Unavailable")

    pipeline = Pipeline(Settings(max_batch_size=1))
    prepared = PreparedImage(torch.zeros(3, 8, 8), (8, 8), (8, 8))
    with pytest.raises(Overloaded) as caught:
        asyncio.run(pipeline._encode(prepared, encode_batch))
    assert caught.value.status == 503 and "SEGANY_MAX_LATENCY_MS" in caught.value.message
    assert not pipeline._staged  # nothing left behind
