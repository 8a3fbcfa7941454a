"""Image-embedding cache: LRU, bounded in bytes, keyed by (model id, image sha256).

Repeated prompts on one image skip the encoder. Concurrent requests for the same new
image share one encoder run (``get_or_compute``). Thread-safe for lookups; the
single-flight bookkeeping runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable

from .engine_types import ImageEmbedding


@dataclass(frozen=True)
class CachedImage:
    """What a request needs of an image it sent earlier.

    image_id: sha256 hex of the image bytes as sent. data: those bytes (kept so that an
    ``overlay`` can be drawn for a request that only sends ``image_id``).
    """

    image_id: str
    embedding: ImageEmbedding
    data: bytes

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes + len(self.data)


class EmbeddingCache:
    def __init__(self, max_bytes: int, model_id: str) -> None:
        self.max_bytes = max_bytes
        self.model_id = model_id
        self._entries: OrderedDict[tuple[str, str], CachedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict[str, asyncio.Future[CachedImage]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, image_id: str) -> CachedImage | None:
        key = (self.model_id, image_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, entry: CachedImage) -> None:
        """Insert ``entry``, evicting least-recently-used entries to stay within the bound.
        An entry larger than the whole bound is not kept."""
        key = (self.model_id, entry.image_id)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    async def get_or_compute(self, image_id: str, compute: Callable[[], Awaitable[CachedImage]]) -> CachedImage:
        """The cached entry, or the result of ``compute()``.

        Concurrent callers for the same ``image_id`` share one computation, which runs as
        its own task: a client that disconnects does not cancel it for the others, and its
        result is still cached. A failed computation is not cached.
        """
        entry = self.get(image_id)
        if entry is not None:
            return entry
        task = self._inflight.get(image_id)
        if task is None:
            task = asyncio.ensure_future(self._compute_and_store(image_id, compute))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "unretrieved"
            self._inflight[image_id] = task
        return await asyncio.shield(task)

    async def _compute_and_store(self, image_id: str, compute: Callable[[], Awaitable[CachedImage]]) -> CachedImage:
        try:
            entry = await compute()
            self.put(entry)
            return entry
        finally:
            self._inflight.pop(image_id, None)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
