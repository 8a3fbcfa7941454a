"""The request path: image source -> cached or batched embedding -> decoder -> response.

``Pipeline`` owns the loaded model, the embedding cache and the limits. The service
hands it an ``encode_batch`` coroutine (its BentoML batchable API): images are staged
here under a ticket, the ticket goes through BentoML's adaptive batcher, and the batch
function (:meth:`Pipeline.encode_staged`) encodes every staged image of the batch in one
forward. Only tickets cross the batcher, so no tensor is ever serialised.

The engine is the torch-free one (runners/converted_engine.py) whenever the settings plan an
OpenVINO encoder with a converted prompt decoder on a CPU; this module then never imports torch
(segment-everything included: runners/mask_generator.py). Otherwise it is the torch engine
(runners/sam.py, loaded by runners/torch_loading.py), and segment-everything is
segment_anything's own generator (runners/everything.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import anyio
import anyio.from_thread
import anyio.to_thread
import numpy as np

from . import responses
from .cache import CachedImage, EmbeddingCache
from .converted import torch_available, torch_needed_by
from .converted_engine import ConvertedEngine
from .engine_types import ImageEmbedding, PreparedImage, Prompts
from .errors import ImageNotFound, NotReady, Overloaded, PromptError, SegAnyError
from .inputs import ImageLimits, check_image_id, decode_base64, decode_image, image_id_of
from .lifecycle import fail_startup
from .mask_generator import GeneratorParams, MaskGenerator
from .prestart import Prestart, prestart
from .schemas import EmbedRequest, EmbedResponse, EverythingRequest, EverythingResponse, ImageRequest, SegmentRequest, SegmentResponse
from .settings import Settings
from .urlfetch import UrlPolicy, fetch_url

logger = logging.getLogger(__name__)
BATCHER_TRAINING_CALLS = 11  # BentoML CorkDispatcher: 8 warm-up calls, then one each at batch 1, 2 and 3

EncodeBatch = Callable[[list[str]], Awaitable[list[str]]]
Engine = Any  # ConvertedEngine or runners.sam.SamEngine: prepare, embed, predict, warm_up


@dataclass
class _Slot:
    """An image waiting in the batcher. The batch function (a worker thread) hands the
    embedding back through ``done`` on the event loop as soon as it is computed."""

    prepared: PreparedImage
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[ImageEmbedding]

    def deliver(self, embedding: ImageEmbedding) -> None:
        self.loop.call_soon_threadsafe(lambda: self.done.done() or self.done.set_result(embedding))


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = ImageLimits.from_settings(settings)
        self.url_policy = UrlPolicy.from_settings(settings)
        self.engine: Engine | None = None
        self.cache: EmbeddingCache | None = None
        self.model_name = settings.model_type
        self._ready = threading.Event()
        self._staged: dict[str, _Slot] = {}
        self.stack_batches = False
        # CPU work of requests (decoding, resizing, the prompt decoder, mask encoding).
        self._workers = anyio.CapacityLimiter(4)
        self._batcher_primed = settings.max_batch_size <= 1  # batching off: no batcher to prime
        self._priming = asyncio.Lock()

    # --- loading ---------------------------------------------------------------------------

    def load(self, early: Prestart | None = None) -> None:
        """Resolve and load the checkpoint, then warm up. Blocking; raises SegAnyError.

        ``early``: a prestart already resolving the checkpoint and compiling the OpenVINO
        encoder (runners/prestart.py); its results are used where this would make them. Without
        one, one is started here when the settings make the torch-free plan certain.
        """
        settings = self.settings
        early = early or prestart(settings)
        compiled = early.compiled.result() if early is not None else None
        torch_free = compiled is not None and compiled.prompts is not None
        if torch_free:
            checkpoint = early.checkpoint.result()
            engine: Engine = ConvertedEngine(compiled.encoder, compiled.prompts)
            logger.info("loading %s converted from %s (%s) on cpu, without torch", early.model_type, checkpoint.path,
                        compiled.converted.xml.parent)
            name, backend, precision, decoder, device = early.model_type, "openvino", early.precision, "openvino", "cpu"
            attention = "exact"
        else:
            if not torch_available():
                raise torch_needed_by(settings)
            from .torch_loading import load_torch_engine  # imports torch

            loaded = load_torch_engine(settings, early)
            engine, checkpoint, name = loaded.engine, loaded.checkpoint, loaded.model_name
            backend, precision, decoder, device = loaded.backend, loaded.precision, loaded.decoder, engine.device.type
            attention = engine.attention
        self.model_name = name
        self.stack_batches = settings.batch_stacking == "stack" or (settings.batch_stacking == "auto" and device == "cuda")
        digest = checkpoint.sha256[:12] if checkpoint.sha256 else "unverified"
        self.cache = EmbeddingCache(settings.embedding_cache_bytes, f"{name}:{digest}:{backend}:{precision}:{attention}")
        warmup = settings.warmup if settings.warmup != "auto" else "decoder" if backend == "openvino" else "full"
        if warmup != "off":
            engine.warm_up(encoder=warmup == "full")
        self.engine = engine
        self._ready.set()
        logger.info("model %s ready (%s, %s encoder, precision %s, %s attention, %s decoder, %s warm-up, %s)", name, device,
                    backend, precision, attention, decoder, warmup, "no torch" if torch_free else "torch engine")

    def start_loading(self, early: Prestart | None = None) -> threading.Thread:
        """Load in a background thread; a failure ends the process with a non-zero status."""

        def run() -> None:
            try:
                self.load(early)
            except SegAnyError as exc:
                fail_startup(exc.message)
            except Exception as exc:  # noqa: BLE001 - anything else is a start-up failure too
                logger.exception("model loading failed")
                fail_startup(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run, name="segany-model-loader", daemon=True)
        thread.start()
        return thread

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    def _require_ready(self) -> tuple[Engine, EmbeddingCache]:
        if self.engine is None or self.cache is None:
            raise NotReady("the model is still loading; retry when /readyz answers 200.")
        return self.engine, self.cache

    # --- the batch function ----------------------------------------------------------------

    def encode_staged(self, tickets: list[str]) -> list[str]:
        """Encode the staged images of ``tickets``: stacked in one forward, or one after
        another (``SEGANY_BATCH_STACKING``). Returns, per ticket, "encoded" or "unknown" (a
        ticket that is not staged in this process)."""
        engine, _ = self._require_ready()
        slots = [self._staged.pop(ticket, None) for ticket in tickets]
        live = [slot for slot in slots if slot is not None]
        if self.stack_batches and len(live) > 1:
            for slot, embedding in zip(live, engine.embed([slot.prepared for slot in live])):
                slot.deliver(embedding)
        else:
            for slot in live:
                slot.deliver(engine.embed([slot.prepared])[0])
        return ["encoded" if slot is not None else "unknown" for slot in slots]

    async def _prime_batcher(self, encode_batch: EncodeBatch) -> None:
        """Finish BentoML's batcher training with no-op calls before the first image.

        BentoML's adaptive batcher fits its latency model on its first 11 calls and holds the
        10th and 11th back, waiting for a batch of 2 and then 3, for about three times its
        estimate of one call: with a heavy encoder and one client that is 1.5-2 encoder runs
        of idle time (measured: 13-17 s on vit_b, 80-105 s on vit_h), on every new replica.
        Tickets nobody staged come back "unknown" in milliseconds, so the training finishes at
        once, on a model of near-zero cost; real calls refine it from then on.
        """
        async with self._priming:
            if self._batcher_primed:
                return
            try:
                for i in range(BATCHER_TRAINING_CALLS):
                    await encode_batch([f"prime-{i}"])
            except Exception:  # noqa: BLE001 - an optimisation only: the image is encoded either way
                logger.warning("priming the batcher failed; early requests may wait on its training", exc_info=True)
            self._batcher_primed = True

    async def _encode(self, prepared: PreparedImage, encode_batch: EncodeBatch) -> ImageEmbedding:
        """The embedding of one prepared image, through the batcher."""
        if not self._batcher_primed:
            await self._prime_batcher(encode_batch)
        loop = asyncio.get_running_loop()
        ticket = uuid.uuid4().hex
        slot = self._staged[ticket] = _Slot(prepared, loop, loop.create_future())
        batch = asyncio.ensure_future(encode_batch([ticket]))
        batch.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved, even if unawaited
        try:
            await asyncio.wait({batch, slot.done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._staged.pop(ticket, None)
        if slot.done.done():
            return slot.done.result()
        exc = batch.exception()
        if exc is None:
            raise SegAnyError("the image encoder returned no embedding; see the server log.")
        if isinstance(exc, SegAnyError):
            raise exc
        if getattr(exc, "error_code", None) == 503 or "overloaded" in str(exc).lower():
            # BentoML's batcher sheds a request whose wait it expects past SEGANY_MAX_LATENCY_MS (503)
            raise Overloaded("the encoder queue is longer than SEGANY_MAX_LATENCY_MS allows; retry later, add "
                             "replicas, or raise SEGANY_MAX_LATENCY_MS.") from exc
        raise SegAnyError(f"the image encoder failed ({type(exc).__name__}); see the server log.") from exc

    # --- images ----------------------------------------------------------------------------

    async def cached_image(self, request: ImageRequest, encode_batch: EncodeBatch) -> tuple[CachedImage, np.ndarray | None]:
        """The request's image with its embedding, and its RGB pixels when they were decoded
        now (None on a cache hit)."""
        _, cache = self._require_ready()
        if request.image_id is not None:
            entry = cache.get(check_image_id(request.image_id))
            if entry is None:
                raise ImageNotFound(
                    f"image_id {request.image_id} is not cached on this server (never sent here, evicted, or sent to "
                    "another replica); send the image again as image or image_url.",
                    field="image_id",
                )
            return entry, None
        if request.image is not None:
            data = await self._run(decode_base64, request.image)
        else:
            data = await anyio.to_thread.run_sync(fetch_url, request.image_url, self.url_policy)
        image_id = await self._run(image_id_of, data)
        decoded: list[np.ndarray] = []

        async def compute() -> CachedImage:
            rgb = await self._run(decode_image, data, self.limits)
            decoded.append(rgb)
            prepared = await self._run(self.engine.prepare, rgb)
            return CachedImage(image_id, await self._encode(prepared, encode_batch), data)

        entry = await cache.get_or_compute(image_id, compute)
        return entry, (decoded[0] if decoded else None)

    async def pixels(self, entry: CachedImage, decoded: np.ndarray | None) -> np.ndarray:
        return decoded if decoded is not None else await self._run(decode_image, entry.data, self.limits)

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._workers)

    # --- operations ------------------------------------------------------------------------

    async def segment(self, request: SegmentRequest, encode_batch: EncodeBatch) -> tuple[SegmentResponse, bytes | None]:
        """Masks for the request's prompts; with output=overlay also the overlay PNG."""
        engine, _ = self._require_ready()
        entry, decoded = await self.cached_image(request, encode_batch)
        prompts = prompts_for(request, entry.embedding.original_size, self.settings)
        rgb = await self.pixels(entry, decoded) if request.output == "overlay" else None

        def decode_and_format() -> tuple[SegmentResponse, bytes | None]:  # one thread hop for both
            return responses.segment_response(entry, engine.predict(entry.embedding, prompts), request, rgb)

        return await self._run(decode_and_format)

    async def everything(self, request: EverythingRequest, encode_batch: EncodeBatch) -> tuple[EverythingResponse, bytes | None]:
        engine, _ = self._require_ready()
        if request.points_per_side > self.settings.max_points_per_side:
            raise PromptError(
                f"points_per_side={request.points_per_side} exceeds the cap {self.settings.max_points_per_side} "
                "(SEGANY_MAX_POINTS_PER_SIDE).",
                field="points_per_side",
            )
        entry, decoded = await self.cached_image(request, encode_batch)
        rgb = await self.pixels(entry, decoded)

        def embed_crop(crop: np.ndarray) -> ImageEmbedding:  # runs in a worker thread
            prepared = engine.prepare(crop)
            return anyio.from_thread.run(self._encode, prepared, encode_batch)

        def run() -> list:  # type: ignore[type-arg]
            if isinstance(engine, ConvertedEngine):
                generator = MaskGenerator(engine, GeneratorParams(**request.generator_kwargs()))
                return generator.generate(rgb, entry.embedding, embed_crop)
            from .everything import segment_everything  # segment_anything's generator: torch

            return segment_everything(engine, rgb, entry.embedding, embed_crop, **request.generator_kwargs())

        instances = await self._run(run)
        return await self._run(responses.everything_response, entry, instances, request, rgb)

    async def embed(
        self, request: EmbedRequest, encode_batch: EncodeBatch, *, npy: bool = False
    ) -> EmbedResponse | tuple[bytes, dict[str, str]]:
        """The EmbedResponse; with ``npy``, the .npy bytes and their headers (responses.embed_npy)."""
        self._require_ready()
        entry, _ = await self.cached_image(request, encode_batch)
        build = responses.embed_npy if npy else responses.embed_response
        return build(entry, self.model_name, request.dtype)


def prompts_for(request: SegmentRequest, size: tuple[int, int], settings: Settings) -> Prompts:
    """Check the request's prompts against the image (H, W) and the caps; build Prompts."""
    height, width = size
    points = boxes = labels = None
    if request.points is not None:
        if len(request.points) > settings.max_points:
            raise PromptError(f"{len(request.points)} points exceed the cap of {settings.max_points} (SEGANY_MAX_POINTS).", field="points")
        points = np.asarray(request.points, dtype=np.float64)
        labels = np.asarray(request.labels, dtype=np.int64)
        for i, (x, y) in enumerate(points):
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(
                    f"points[{i}] = ({x:g}, {y:g}) is outside the {width}x{height} image; "
                    "coordinates are pixels of the original image, x from the left, y from the top.",
                    field=f"points[{i}]",
                )
    if request.boxes is not None:
        if len(request.boxes) > settings.max_boxes:
            raise PromptError(f"{len(request.boxes)} boxes exceed the cap of {settings.max_boxes} (SEGANY_MAX_BOXES).", field="boxes")
        boxes = np.asarray(request.boxes, dtype=np.float64)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if not (x0 <= x1 and y0 <= y1):
                raise PromptError(f"boxes[{i}] must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1.", field=f"boxes[{i}]")
            if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
                raise PromptError(
                    f"boxes[{i}] = [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is outside the {width}x{height} image.",
                    field=f"boxes[{i}]",
                )
    mask_input = request.mask_input_array()
    multimask = request.multimask
    if multimask is None:  # SAM's advice: several masks for an ambiguous single click
        multimask = points is not None and len(points) == 1 and boxes is None and mask_input is None
    return Prompts(points=points, labels=labels, boxes=boxes, mask_input=mask_input, multimask=multimask)
