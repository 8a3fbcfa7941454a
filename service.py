"""segment-anywhere: Segment Anything (SAM) as a BentoML service.

    bentoml serve service:SegmentAnything        # SEGANY_MODEL=tiny for a quick offline start

Endpoints: POST /segment (prompts -> masks), POST /segment_everything (all instances),
POST /embed (the image embedding). Every image goes through the batchable ``encode`` API,
so concurrent requests share encoder forwards; embeddings are cached by image sha256 and
returned as ``image_id``. Settings: ``SEGANY_*`` variables, see runners/settings.py.
"""

from __future__ import annotations

import bentoml
from starlette.responses import Response

from runners.edge import RequestEdge, json_errors
from runners.lifecycle import install_exit_hook
from runners.prestart import start_in_worker
from runners.schemas import (
    NPY_MEDIA_TYPE,
    EmbedRequest,
    EmbedResponse,
    EverythingRequest,
    EverythingResponse,
    SegmentRequest,
    SegmentResponse,
)
from runners.server_logging import use_info_level
from runners.settings import Settings
from runners.web import PAGE_PATH, page_app

SETTINGS = Settings.from_env()  # a bad SEGANY_* value stops `bentoml serve` here, before it binds
install_exit_hook()
use_info_level()
start_in_worker(SETTINGS, bentoml.server_context.worker_index)  # the OpenVINO encoder starts compiling


def _png_or_json(ctx: bentoml.Context, response: object, png: bytes | None) -> object:
    """output=overlay with ``Accept: image/png`` gets the picture itself."""
    if png is not None and "image/png" in ctx.request.headers.get("accept", ""):
        return Response(content=png, media_type="image/png")
    return response


@bentoml.service(
    name="segment_anything",
    workers=1,  # one model copy per container; scale out with replicas
    threads=1,  # the encoder batch runs in one thread at a time
    traffic={"timeout": SETTINGS.request_timeout_s},
)
class SegmentAnything:
    def __init__(self) -> None:
        from runners.prestart import take_prestart

        early = take_prestart(SETTINGS)  # the OpenVINO encoder and prompt decoder, compiling since the import
        from runners.pipeline import Pipeline  # torch-free; the torch engine, when planned, imports it in the loader

        self.pipeline = Pipeline(SETTINGS)
        self.pipeline.start_loading(early)  # /readyz says 503 until loaded and warmed up

    def __is_ready__(self) -> bool:
        return self.pipeline.is_ready

    @bentoml.api(
        batchable=SETTINGS.max_batch_size > 1,  # SEGANY_MAX_BATCH_SIZE=1 turns adaptive batching off
        max_batch_size=max(2, SETTINGS.max_batch_size),
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def encode(self, tickets: list[str]) -> list[str]:
        """Internal: encode the images that the endpoints below staged in this process.

        Only tickets pass through BentoML's adaptive batcher, never pixels; a ticket from
        another process answers "unknown". Clients use /embed. The endpoints call it as
        ``self.to_async.encode`` (BentoML's in-process client), which goes through the batcher.
        """
        return self.pipeline.encode_staged(tickets)

    @bentoml.api(route="/segment")
    @json_errors
    async def segment(self, request: SegmentRequest, /, ctx: bentoml.Context) -> SegmentResponse:
        """Masks for point, box and mask prompts on one image (SamPredictor.predict)."""
        response, png = await self.pipeline.segment(request, self.to_async.encode)
        return _png_or_json(ctx, response, png)

    @bentoml.api(route="/segment_everything")
    @json_errors
    async def segment_everything(self, request: EverythingRequest, /, ctx: bentoml.Context) -> EverythingResponse:
        """Every instance in the image (SamAutomaticMaskGenerator)."""
        response, png = await self.pipeline.everything(request, self.to_async.encode)
        return _png_or_json(ctx, response, png)

    @bentoml.api(route="/embed")
    @json_errors
    async def embed(self, request: EmbedRequest, /, ctx: bentoml.Context) -> EmbedResponse:
        """The image embedding (1, 256, 64, 64), for clients that run the prompt decoder themselves.
        ``Accept: application/x-npy`` gets it as a .npy file, the other fields in X-Segany-* headers."""
        npy = NPY_MEDIA_TYPE in ctx.request.headers.get("accept", "")
        response = await self.pipeline.embed(request, self.to_async.encode, npy=npy)
        if npy:
            body, headers = response
            return Response(content=body, media_type=NPY_MEDIA_TYPE, headers=headers)
        return response


SegmentAnything.add_asgi_middleware(RequestEdge, max_body_bytes=SETTINGS.max_body_bytes)
SegmentAnything.mount_asgi_app(page_app(), path=PAGE_PATH)  # the web page at /ui/ (BentoML's docs stay at /)
