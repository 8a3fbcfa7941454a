"""Image-encoder backends behind one call: (B, 3, 1024, 1024) float32 -> (B, 256, 64, 64) float32.

- ``torch``: SAM's own ``ImageEncoderViT`` (the reference, and the CUDA path), with
  optional autocast.
- ``openvino``: the same encoder converted to OpenVINO IR once per checkpoint and compiled
  with OpenVINO's model cache (runners/converted.py). When it is used, the encoder's weights
  are never loaded into torch at all: they live once, in OpenVINO's repacked buffers.

``SEGANY_ENCODER`` picks one: ``auto`` is OpenVINO on CPU when the package is installed,
torch otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from .converted import ConvertedEncoder, compile_converted, openvino_available
from .converted_engine import encode_one
from .errors import ConfigError


class Encoder(Protocol):
    name: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: (B, 3, 1024, 1024) float32, preprocessed -> (B, 256, 64, 64) float32."""


def choose_backend(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "openvino" if device.type == "cpu" and openvino_available() else "torch"
    if requested == "openvino":
        if device.type != "cpu":
            raise ConfigError("SEGANY_ENCODER=openvino runs on CPU; with SEGANY_DEVICE=cuda use torch (or auto).")
        if not openvino_available():
            raise ConfigError("SEGANY_ENCODER=openvino needs the openvino package: pip install openvino, or use torch.")
    return requested


class TorchEncoder:
    name = "torch"

    def __init__(self, image_encoder: torch.nn.Module, device: torch.device, autocast: torch.dtype | None) -> None:
        self.image_encoder, self.device, self.autocast = image_encoder, device, autocast

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.autocast is None:
                return self.image_encoder(batch)
            with torch.autocast(self.device.type, dtype=self.autocast):
                return self.image_encoder(batch).float()


class OpenVINOEncoder:
    name = "openvino"

    def __init__(self, compiled: Any, precision: str) -> None:
        """compiled: an ``openvino.CompiledModel`` of the converted encoder (runners/converted.py)."""
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision

    @classmethod
    def from_converted(cls, converted: ConvertedEncoder, precision: str, threads: int = 0) -> OpenVINOEncoder:
        return cls(compile_converted(converted, precision, threads), precision)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # the IR has a static batch of 1; on CPU one at a time is fastest anyway
        return torch.cat([torch.from_numpy(encode_one(self.request, image.numpy())) for image in batch])

