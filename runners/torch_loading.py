"""Loading the torch engine (runners/sam.py).

The torch engine serves whatever the torch-free one (runners/converted_engine.py) cannot: CUDA,
the torch encoder (``SEGANY_ENCODER=torch``), the torch decoder (``SEGANY_DECODER=torch``), a
converted folder without a prompt decoder, ``SEGANY_MODEL`` unset. Imported only when used: it
imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .checkpoints import ResolvedCheckpoint, resolve_checkpoint
from .converted import compile_for, folder_without_checkpoint, openvino_precision
from .decoders import use_openvino_decoder
from .encoders import Encoder, OpenVINOEncoder, TorchEncoder, choose_backend
from .models import load_sam
from .prestart import Prestart
from .sam import SamEngine, autocast_dtype, select_device, uses_sdpa
from .settings import Settings
from .specs import get_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchLoaded:
    """A loaded torch engine and what the log line and the embedding cache's key say of it."""

    engine: SamEngine
    model_name: str
    checkpoint: ResolvedCheckpoint
    backend: str  # the encoder's: "torch" or "openvino"
    precision: str
    decoder: str  # "torch" or "openvino"


def load_torch_engine(settings: Settings, early: Prestart | None) -> TorchLoaded:
    """Resolve and load the checkpoint into a torch SAM, its encoder in torch or OpenVINO."""
    requested = get_spec(settings.model_type) if settings.model_type else None
    device = select_device(settings.device)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    backend = choose_backend(settings.encoder, device)
    sdpa = uses_sdpa(settings.attention, device, backend)
    if backend == "openvino":
        precision = openvino_precision(settings.precision)  # as the prestart compiles it
    else:
        autocast = autocast_dtype(settings.precision, device)
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]
    if early is None and settings.checkpoint is None and settings.openvino_dir is not None:
        raise folder_without_checkpoint(settings.openvino_dir)  # (the CPU image bakes no checkpoint)
    checkpoint = early.checkpoint.result() if early else resolve_checkpoint(settings, requested or get_spec("vit_h"))
    logger.info("loading %s from %s on %s (%s encoder)", settings.model_type or "SAM", checkpoint.path, device, backend)
    model = load_sam(requested, checkpoint.path, device, with_encoder=backend == "torch")
    spec = get_spec(model.segany_model_type)
    decoder = "torch"
    if backend == "openvino":
        compiled = early.compiled.result() if early is not None else None  # None: the prestart could not tell the type
        compiled = compiled or compile_for(settings, checkpoint, spec.name, precision)
        encoder: Encoder = OpenVINOEncoder(compiled.encoder, precision)
        if compiled.decoder is not None:
            use_openvino_decoder(model.mask_decoder, compiled.decoder)
            decoder = "openvino"
    else:
        encoder = TorchEncoder(model.image_encoder, device, autocast)
    return TorchLoaded(SamEngine(model, device, encoder, sdpa), spec.name, checkpoint, backend, precision, decoder)
