"""The registered SAM shapes (vit_h, vit_l, vit_b, tiny) and where their official weights live.

Torch-free, so that loading can resolve a checkpoint and start the OpenVINO encoder before the
worker has imported torch (runners/prestart.py). Builders live in runners/models.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import ConfigError

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# Every registered shape's encoder input and normalisation (segment_anything.build_sam's).
IMAGE_SIZE = 1024
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelSpec:
    """The shape of one SAM variant and where its official weights live."""

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    checkpoint_filename: str | None = None  # official file name; None for tiny
    sha256: str | None = None  # digest of the official file
    size_bytes: int | None = None

    @property
    def checkpoint_url(self) -> str | None:
        return OFFICIAL_BASE_URL + self.checkpoint_filename if self.checkpoint_filename else None


MODEL_SPECS: dict[str, ModelSpec] = {
    "vit_h": ModelSpec(
        "vit_h", 1280, 32, 16, (7, 15, 23, 31), "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879,
    ),
    "vit_l": ModelSpec(
        "vit_l", 1024, 24, 16, (5, 11, 17, 23), "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607,
    ),
    "vit_b": ModelSpec(
        "vit_b", 768, 12, 12, (2, 5, 8, 11), "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383,
    ),
    "tiny": ModelSpec("tiny", 64, 2, 2, (1,)),
}

OFFICIAL_DIGESTS = {spec.checkpoint_url: spec.sha256 for spec in MODEL_SPECS.values() if spec.checkpoint_url}


def spec_from_shapes(shapes: Mapping[str, Sequence[int]]) -> ModelSpec | None:
    """The registered model whose shape a checkpoint's tensors have (name -> shape): image encoder
    width and depth. None when no registered shape fits."""
    patch = shapes.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    depth = len({key.split(".")[2] for key in shapes if key.startswith("image_encoder.blocks.")})
    return next(
        (spec for spec in MODEL_SPECS.values() if (spec.encoder_embed_dim, spec.encoder_depth) == (patch[0], depth)),
        None,
    )


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown model type {name!r}; choose one of {', '.join(MODEL_SPECS)}.") from None
