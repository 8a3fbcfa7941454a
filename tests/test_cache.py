"""The embedding cache: byte-bounded LRU and single-flight computation."""

import asyncio

import pytest
import torch

from runners.cache import CachedImage, EmbeddingCache
from runners.sam import ImageEmbedding

MB = 1 << 20


def entry(image_id: str, mb: float = 1.0) -> CachedImage:
    features = torch.zeros(int(mb * MB) // 4, dtype=torch.float32)
    return CachedImage(image_id, ImageEmbedding(features, (10, 10), (10, 10)), b"")


def test_lru_eviction_stays_within_the_byte_bound():
    cache = EmbeddingCache(max_bytes=3 * MB, model_id="m")
    for name in "abc":
        cache.put(entry(name))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put(entry("d"))
    assert cache.get("b") is None  # b was least recently used
    assert [cache.get(k) is not None for k in "acd"] == [True, True, True]
    assert cache.nbytes <= 3 * MB and len(cache) == 3


def test_entry_larger_than_the_bound_is_not_kept_and_evicts_nothing():
    cache = EmbeddingCache(max_bytes=2 * MB, model_id="m")
    cache.put(entry("a"))
    cache.put(entry("huge", mb=5))
    assert cache.get("huge") is None and cache.get("a") is not None


def test_keys_include_the_model():
    shared = EmbeddingCache(max_bytes=10 * MB, model_id="vit_b:1")
    shared.put(entry("x"))
    shared.model_id = "vit_h:2"
    assert shared.get("x") is None


def test_concurrent_requests_for_one_image_compute_once():
    cache = EmbeddingCache(max_bytes=10 * MB, model_id="m")
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return entry("x")

    async def main():
        return await asyncio.gather(*(cache.get_or_compute("x", compute) for _ in range(5)))

    results = asyncio.run(main())
    assert calls == 1 and all(r is results[0] for r in results)
    assert cache.get("x") is results[0]


def test_a_failed_computation_is_not_cached_and_can_be_retried():
    cache = EmbeddingCache(max_bytes=10 * MB, model_id="m")

    async def failing():
        raise ValueError("encoder broke")

    async def ok():
        return entry("x")

    async def main():
        with pytest.raises(ValueError):
            await cache.get_or_compute("x", failing)
        return await cache.get_or_compute("x", ok)

    assert asyncio.run(main()).image_id == "x"


def test_a_cancelled_caller_does_not_cancel_the_shared_computation():
    cache = EmbeddingCache(max_bytes=10 * MB, model_id="m")

    async def slow():
        await asyncio.sleep(0.1)
        return entry("x")

    async def main():
        first = asyncio.ensure_future(cache.get_or_compute("x", slow))
        second = asyncio.ensure_future(cache.get_or_compute("x", slow))
        await asyncio.sleep(0.02)
        first.cancel()
        return await second

    assert asyncio.run(main()).image_id == "x"
    assert cache.get("x") is not None
