"""The OpenVINO encoder on disk: converted once per checkpoint, compiled at each start.

Torch-free (torch is only a child process's business here), so that loading can compile the
encoder while the worker is still importing torch (runners/prestart.py).

- ``converted_encoder`` finds the IR for a checkpoint, or converts it once in a child process
  (``python -m runners.convert``), whose memory (a traced copy of the whole encoder) goes back
  to the system when it exits.
- ``compile_converted`` compiles it with OpenVINO's model cache, so later starts read a blob.
  OpenVINO releases the GIL while it compiles. The pages of the mapped files it copies the
  weights from are given back while it does (runners/mapped_pages.py): the weights live once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoints import ResolvedCheckpoint
from .errors import CheckpointError
from .mapped_pages import ReleasingMappedPages
from .settings import Settings

logger = logging.getLogger(__name__)

CONVERTER_VERSION = 2  # bump when the conversion changes, so cached IRs are rebuilt
IMAGE_SHAPE = (1, 3, 1024, 1024)
# SEGANY_PRECISION -> the precision OpenVINO compiles for (CPU only; fp16 is refused on CPU).
OPENVINO_PRECISIONS = {"auto": "fp32", "fp32": "fp32", "bf16": "bf16"}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


@dataclass(frozen=True)
class ConvertedEncoder:
    """Where a converted encoder lives: ``xml`` (+ its .bin), and OpenVINO's compiled-model cache
    (None: compile at every start and write no blob)."""

    xml: Path
    compiled_cache: Path | None


def _version(distribution: str) -> str:
    """An installed distribution's version, read without importing it (torch takes seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def conversion_key(checkpoint: Path, sha256: str | None, model_type: str) -> str:
    """Identifies a converted encoder: the weights (digest, or path/size/mtime when no digest
    was verified), the model shape, and the versions that shape the IR."""
    if sha256 is None:
        stat = checkpoint.stat()
        sha256 = f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    parts = [sha256, model_type, _version("openvino"), _version("torch"), str(CONVERTER_VERSION)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def converted_encoder(cache_dir: Path, checkpoint: Path, sha256: str | None, model_type: str,
                      prebuilt: Path | None = None, keep_compiled: bool = True) -> ConvertedEncoder:
    """The converted encoder for this checkpoint, converting it (once) when it is not cached.

    ``prebuilt`` (SEGANY_OPENVINO_DIR) is a folder ``segany convert`` wrote ahead of time, for
    example into an image at build time; it may be read-only. OpenVINO's compiled-model cache,
    when ``keep_compiled``, goes under ``cache_dir``.
    """
    key = conversion_key(checkpoint, sha256, model_type)
    folder = prebuilt or cache_dir / "openvino" / key
    compiled_cache = cache_dir / "openvino-compiled" / key if keep_compiled else None
    converted = ConvertedEncoder(folder / "image_encoder.xml", compiled_cache)
    if converted.xml.is_file() and converted.xml.with_suffix(".bin").is_file():
        return converted
    if prebuilt:
        raise CheckpointError(f"SEGANY_OPENVINO_DIR={prebuilt} holds no image_encoder.xml/.bin; run `segany convert` into it.")
    logger.warning("converting the %s image encoder to OpenVINO (once per checkpoint; minutes for vit_h) into %s",
                   model_type, folder)
    convert_in_child(checkpoint, model_type, folder)
    return converted


def convert_in_child(checkpoint: Path, model_type: str, folder: Path) -> None:
    """Run the conversion in a child process: its memory is returned to the system when it exits."""
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


def compile_converted(converted: ConvertedEncoder, precision: str, threads: int = 0) -> Any:
    """Compile the IR for this CPU (``precision`` "fp32" or "bf16"); an ``openvino.CompiledModel``.

    Reads OpenVINO's compiled-model cache when it holds this model, and fills it otherwise.
    """
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    mapped = [converted.xml.parent]
    if converted.compiled_cache is not None:
        core.set_property({props.cache_dir: str(converted.compiled_cache)})
        mapped.append(converted.compiled_cache)
    config = {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
    }
    if threads:
        config[props.inference_num_threads] = threads
    if precision == "bf16" and "BF16" not in core.get_property("CPU", props.device.capabilities):
        logger.warning("SEGANY_PRECISION=bf16: this CPU has no bf16 support; OpenVINO runs f32")
    with ReleasingMappedPages(mapped):  # the weights held once
        return core.compile_model(str(converted.xml), "CPU", config)


def compile_for(settings: Settings, checkpoint: ResolvedCheckpoint, model_type: str, precision: str) -> Any:
    """The compiled encoder for a resolved checkpoint, as the settings ask (converting it first
    when no converted copy exists)."""
    converted = converted_encoder(settings.cache_dir, checkpoint.path, checkpoint.sha256, model_type,
                                  settings.openvino_dir, settings.keeps_compiled_encoder)
    return compile_converted(converted, precision, settings.torch_threads)
