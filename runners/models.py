"""Registry of SAM model builders: vit_h, vit_l, vit_b (official shapes) and tiny.

``tiny`` is the same SAM architecture (ViT image encoder with windowed and global
attention, the standard prompt encoder and mask decoder, 256x64x64 embeddings for a
1024x1024 input) with a small image encoder, and weights drawn from a fixed seed. It is
for tests, CI and offline demos; it loads through the same checkpoint code as the others.

Models are built on the ``meta`` device and the checkpoint's tensors are assigned into
them (``load_state_dict(assign=True)``), so weights are held once, straight from the
(memory-mapped) checkpoint, with no random initialisation and no extra copy.
"""

from __future__ import annotations

import io
import logging
import zipfile
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from .checkpoint_shapes import UnreadableShapes, tensor_shapes
from .errors import CheckpointError
from .specs import IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD, ModelSpec, spec_from_shapes

logger = logging.getLogger(__name__)

TINY_SEED = 0
PATCH_SIZE = 16
PROMPT_EMBED_DIM = 256


def build_sam(spec: ModelSpec, device: torch.device | str | None = None) -> Sam:
    """Build an uninitialised-or-random SAM of ``spec``'s shape, exactly as
    ``segment_anything.build_sam`` does for the official variants."""
    embedding_size = IMAGE_SIZE // PATCH_SIZE
    with torch.device(device or "cpu"):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=spec.encoder_depth,
                embed_dim=spec.encoder_embed_dim,
                img_size=IMAGE_SIZE,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=spec.encoder_num_heads,
                patch_size=PATCH_SIZE,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=list(spec.encoder_global_attn_indexes),
                window_size=14,
                out_chans=PROMPT_EMBED_DIM,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=PROMPT_EMBED_DIM,
                image_embedding_size=(embedding_size, embedding_size),
                input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8),
                transformer_dim=PROMPT_EMBED_DIM,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=list(PIXEL_MEAN),
            pixel_std=list(PIXEL_STD),
        )
    return sam.eval()


def random_state_dict(spec: ModelSpec, seed: int = TINY_SEED) -> dict[str, torch.Tensor]:
    """Deterministic random-init weights of ``spec``'s shape (tiny's weights; benchmarks'
    vit_b/vit_h-shaped models)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_sam(spec).state_dict()


def write_checkpoint(spec: ModelSpec, path: Path, seed: int = TINY_SEED) -> Path:
    """Write a random-init checkpoint of ``spec``'s shape, in the official file format.

    The bytes depend only on the weights (saved through a buffer, so the archive's
    internal name does not follow the file name): the same seed gives the same sha256.
    """
    buffer = io.BytesIO()
    torch.save(random_state_dict(spec, seed), buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getbuffer())
    tmp.replace(path)
    return path


def spec_of(state_dict: dict[str, torch.Tensor]) -> ModelSpec | None:
    """The registered model whose shape the weights have (image encoder width and depth)."""
    return spec_from_shapes({key: tuple(value.shape) for key, value in state_dict.items() if hasattr(value, "shape")})


def checkpoint_spec(path: Path) -> ModelSpec | None:
    """The registered model whose shape a checkpoint file has: read without loading it where
    runners/checkpoint_shapes.py can (a shape it read and no model fits is None, not read again),
    else by torch (:func:`read_state_dict`, which raises CheckpointError)."""
    try:
        return spec_from_shapes(tensor_shapes(path))
    except UnreadableShapes:
        pass
    state = read_state_dict(path)
    return spec_of(state.get("model", state) if isinstance(state, dict) else {})


def read_state_dict(checkpoint: Path) -> object:
    """``torch.load`` of a checkpoint, tensors on the CPU and memory-mapped (held once, in the page
    cache). A file in torch's pre-1.6 format (``_use_new_zipfile_serialization=False``; not a zip)
    cannot be mapped and is read into memory instead. Raises CheckpointError naming the fix."""
    mapped = zipfile.is_zipfile(checkpoint)
    if not mapped:
        logger.warning("%s is in torch's legacy (pre-1.6) format: read into memory, not memory-mapped; "
                       "re-save it with torch.save to map it", checkpoint)
    try:
        return torch.load(checkpoint, map_location="cpu", mmap=mapped, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, not a torch file
        raise CheckpointError(
            f"{checkpoint} is not a readable SAM checkpoint ({type(exc).__name__}: {exc}); "
            "delete it from the cache to download it again, or point SEGANY_CHECKPOINT at a .pth file."
        ) from exc


class EncoderElsewhere(torch.nn.Module):
    """Stands in for the image encoder when another runtime holds its weights; SAM's
    predictor code only reads its ``img_size``."""

    img_size = IMAGE_SIZE

    def forward(self, x):  # type: ignore[no-untyped-def]
        raise RuntimeError("this model's image encoder runs in another runtime (runners.encoders)")


def load_sam(spec: ModelSpec | None, checkpoint: Path, device: torch.device, *, with_encoder: bool = True) -> Sam:
    """Build SAM and load ``checkpoint`` into it without a second copy of the weights.

    ``spec`` None means: the registered model whose shape the checkpoint has. The file is
    memory-mapped and its tensors are assigned to the module (CPU), or copied once to the
    GPU. A checkpoint of another shape raises CheckpointError naming the model type to set.
    ``with_encoder=False`` leaves the image encoder's weights unread (another runtime runs it).
    """
    state_dict = read_state_dict(checkpoint)
    if isinstance(state_dict, dict) and "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]  # some fine-tuning scripts wrap the weights
    if spec is None:
        spec = spec_of(state_dict) if isinstance(state_dict, dict) else None
        if spec is None:
            raise CheckpointError(
                f"{checkpoint} has no SAM image encoder of a known shape; set SEGANY_MODEL (vit_h, vit_l, vit_b, tiny) "
                "or check that the file is a SAM checkpoint."
            )
    sam = build_sam(spec, device="meta")
    if not with_encoder:
        sam.image_encoder = EncoderElsewhere()
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("image_encoder.")}
    try:
        sam.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{checkpoint} does not fit SEGANY_MODEL={spec.name}: {str(exc).splitlines()[0]} "
            "Set SEGANY_MODEL to the checkpoint's type (vit_h, vit_l, vit_b or tiny)."
        ) from exc
    # Non-persistent buffers are not in checkpoints: materialise them off the meta device.
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)
    meta = [name for name, t in list(sam.named_parameters()) + list(sam.named_buffers()) if t.is_meta]
    if meta:
        raise CheckpointError(f"{checkpoint} lacks tensors {meta[:3]}...; it is not a complete SAM checkpoint.")
    sam.segany_model_type = spec.name  # which registered shape this is, for callers that asked for any
    return sam.to(device).eval()
