"""Image-encoder backends behind one call: (B, 3, 1024, 1024) float32 -> (B, 256, 64, 64) float32.

- ``torch``: SAM's own ``ImageEncoderViT`` (the reference, and the CUDA path), with
  optional autocast.
- ``openvino``: the same encoder converted to OpenVINO IR once per checkpoint (in a child
  process, so the server never holds the conversion's memory), kept on disk next to the
  checkpoint cache, and compiled with OpenVINO's model cache, so later starts only read it.
  When it is used, the encoder's weights are never loaded into torch at all: they live
  once, in OpenVINO's repacked buffers (the pages of the mapped files it copied them from
  are given back while it compiles: runners/mapped_pages.py).

``SEGANY_ENCODER`` picks one: ``auto`` is OpenVINO on CPU when the package is installed,
torch otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .errors import CheckpointError, ConfigError
from .mapped_pages import ReleasingMappedPages

logger = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when the conversion changes, so cached IRs are rebuilt
IMAGE_SHAPE = (1, 3, 1024, 1024)


class Encoder(Protocol):
    name: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: (B, 3, 1024, 1024) float32, preprocessed -> (B, 256, 64, 64) float32."""


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


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


@dataclass(frozen=True)
class ConvertedEncoder:
    """Where a converted encoder lives: ``xml`` (+ its .bin) and OpenVINO's compiled-model cache."""

    xml: Path
    compiled_cache: Path


class OpenVINOEncoder:
    name = "openvino"

    def __init__(self, converted: ConvertedEncoder, precision: str, threads: int = 0) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        core.set_property({props.cache_dir: str(converted.compiled_cache)})
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
        }
        if threads:
            config[props.inference_num_threads] = threads
        if precision == "bf16" and "BF16" not in core.get_property("CPU", props.device.capabilities):
            logger.warning("SEGANY_PRECISION=bf16: this CPU has no bf16 support; OpenVINO runs f32")
        with ReleasingMappedPages([converted.xml.parent, converted.compiled_cache]):  # weights held once
            self.compiled = core.compile_model(str(converted.xml), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        outputs = []
        for image in batch:  # the IR has a static batch of 1; on CPU one at a time is fastest anyway
            result = self.request.infer({0: image[None].contiguous().numpy()})
            outputs.append(torch.from_numpy(result[0].copy()))
        return torch.cat(outputs)


# --- conversion ------------------------------------------------------------------------------------


def conversion_key(checkpoint: Path, sha256: str | None, model_type: str) -> str:
    """Identifies a converted encoder: the weights (digest, or path/size/mtime when no digest
    was verified), the model shape, and the versions that shape the IR."""
    import openvino

    if sha256 is None:
        stat = checkpoint.stat()
        sha256 = f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    parts = [sha256, model_type, openvino.__version__, torch.__version__, str(CONVERTER_VERSION)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def converted_encoder(cache_dir: Path, checkpoint: Path, sha256: str | None, model_type: str,
                      prebuilt: Path | None = None) -> ConvertedEncoder:
    """The converted encoder for this checkpoint, converting it (once) when it is not cached.

    ``prebuilt`` (SEGANY_OPENVINO_DIR) is a folder ``segany convert`` wrote ahead of time, for
    example into an image at build time; it may be read-only. OpenVINO's compiled-model cache
    always goes under ``cache_dir``.
    """
    key = conversion_key(checkpoint, sha256, model_type)
    folder = prebuilt or cache_dir / "openvino" / key
    converted = ConvertedEncoder(folder / "image_encoder.xml", cache_dir / "openvino-compiled" / key)
    if converted.xml.is_file() and converted.xml.with_suffix(".bin").is_file():
        return converted
    if prebuilt:
        raise CheckpointError(f"SEGANY_OPENVINO_DIR={prebuilt} holds no image_encoder.xml/.bin; run `segany convert` into it.")
    logger.warning("converting the %s image encoder to OpenVINO (once per checkpoint; minutes for vit_h) into %s",
                   model_type, folder)
    convert_in_child(checkpoint, model_type, folder)
    return converted


def convert_in_child(checkpoint: Path, model_type: str, folder: Path) -> None:
    """Run the conversion in a child process: its memory (a traced copy of the whole
    encoder) is returned to the system when it exits."""
    command = [sys.executable, "-m", "runners.convert", "--checkpoint", str(checkpoint),
               "--model-type", model_type, "--out", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckpointError(
            f"converting the image encoder to OpenVINO failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}. "
            "Use SEGANY_ENCODER=torch to serve without OpenVINO."
        )


def write_manifest(folder: Path, **fields: object) -> None:
    (folder / "manifest.json").write_text(json.dumps(fields, indent=2) + "\n")
