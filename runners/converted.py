"""The OpenVINO encoder (and mask decoder) on disk: converted once per checkpoint, compiled at each start.

Torch-free (torch is only a child process's business here), so that loading can compile the
encoder while the worker is still importing torch (runners/prestart.py).

- ``converted_encoder`` finds the IR for a checkpoint, or converts it once in a child process
  (``python -m runners.convert``), whose memory (a traced copy of the whole encoder) goes back
  to the system when it exits.
  With ``SEGANY_PRECISION=int8`` the child also quantizes it with NNCF, calibrated on a folder
  of photos (runners/calibration.py), into an encoder of its own.
- ``compile_converted`` compiles it with OpenVINO's model cache, so later starts read a blob.
  OpenVINO releases the GIL while it compiles. The pages of the mapped files it copies the
  weights from are given back while it does (runners/mapped_pages.py): the weights live once.
- ``compile_decoder`` compiles the mask decoder converted beside it, always in float32.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .calibration import calibration_digest, calibration_images, require_nncf
from .checkpoints import ResolvedCheckpoint
from .errors import CheckpointError, ConfigError
from .mapped_pages import ReleasingMappedPages
from .settings import Settings

logger = logging.getLogger(__name__)

CONVERTER_VERSION = 8  # bump when the conversion changes, so cached IRs are rebuilt (3: + the mask decoder; 4: attention chunks concatenated; 5: one head a chunk; 6: constants folded at conversion, padding strips at their own size; 7: + the prompt decoder; 8: blocks on rows, one transpose each way)
IMAGE_SHAPE = (1, 3, 1024, 1024)
DECODER_XML = "mask_decoder.xml"
MANIFEST = "manifest.json"  # how, from what and by which versions a folder was converted
PROMPT_DECODER_XML = "prompt_decoder.xml"  # runners/prompt_decoder.py; its point labels (SamOnnxModel's):
PADDING, BACKGROUND, FOREGROUND, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3
# SEGANY_PRECISION -> the precision of the OpenVINO encoder (CPU only; fp16 is refused on CPU).
# int8: an encoder quantized at conversion, its other operations in bf16 where the CPU has it.
OPENVINO_PRECISIONS = {"auto": "fp32", "fp32": "fp32", "bf16": "bf16", "int8": "int8"}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def torch_available() -> bool:
    """False in a cpu image with baked weights (deploy/build.py leaves torch out of it)."""
    return importlib.util.find_spec("torch") is not None


def torch_needed_by(settings: Settings) -> ConfigError:
    """The error where loading left the torch-free plan and torch is missing, naming what left it."""
    named = [f"{name}={value}" for name, value, torch_only in (
        ("SEGANY_ENCODER", settings.encoder, settings.encoder == "torch"),
        ("SEGANY_DECODER", settings.decoder, settings.decoder == "torch"),
        ("SEGANY_ATTENTION", settings.attention, settings.attention == "sdpa"),
        ("SEGANY_DEVICE", settings.device, settings.device == "cuda"),
        ("SEGANY_PRECISION", settings.precision, settings.precision not in OPENVINO_PRECISIONS)) if torch_only]
    if named:
        return without_torch(" and ".join(named))
    return without_torch("this model (a checkpoint of unknown shape, or a folder converted without its prompt decoder)",
                         "convert it where torch is installed (`segany convert`) and point SEGANY_OPENVINO_DIR at the folder")


def without_torch(what: str, fix: str = "unset it") -> ConfigError:
    """The error where ``what`` needs torch and this installation has none."""
    return ConfigError(f"{what} needs torch, which this installation leaves out (a cpu image with baked weights serves "
                       f"its converted model with OpenVINO alone): {fix}, or rebuild the image with `segany build --keep-torch`.")


@dataclass(frozen=True)
class ConvertedEncoder:
    """Where a converted encoder lives: ``xml`` (+ its .bin), and OpenVINO's compiled-model cache
    (None: compile at every start and write no blob)."""

    xml: Path
    compiled_cache: Path | None

    @property
    def decoder_xml(self) -> Path:
        return self.xml.with_name(DECODER_XML)

    @property
    def prompt_decoder_xml(self) -> Path:
        return self.xml.with_name(PROMPT_DECODER_XML)


def installed_version(distribution: str) -> str:
    """An installed distribution's version, read without importing it (torch takes seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def openvino_precision(requested: str) -> str:
    """SEGANY_PRECISION -> the OpenVINO encoder's precision ("fp32", "bf16" or "int8")."""
    if requested not in OPENVINO_PRECISIONS:
        raise ConfigError(f"SEGANY_PRECISION={requested} needs a CUDA device; on CPU use fp32, bf16 or int8.")
    return OPENVINO_PRECISIONS[requested]


def conversion_key(checkpoint: Path, sha256: str | None, model_type: str, calibration: list[Path] | None = None) -> str:
    """Identifies a converted encoder: the weights (digest, or path/size/mtime when no digest
    was verified), the model shape, the versions that shape the IR, and for an int8 encoder
    its calibration images and NNCF's version."""
    if sha256 is None:
        stat = checkpoint.stat()
        sha256 = f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    parts = [sha256, model_type, installed_version("openvino"), installed_version("torch"), str(CONVERTER_VERSION)]
    if calibration is not None:
        parts += ["int8", calibration_digest(calibration), installed_version("nncf")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def converted_encoder(cache_dir: Path, checkpoint: Path, sha256: str | None, model_type: str,
                      prebuilt: Path | None = None, keep_compiled: bool = True,
                      int8_calibration: Path | None = None) -> ConvertedEncoder:
    """The converted encoder for this checkpoint, converting it (once) when it is not cached.

    ``prebuilt`` (SEGANY_OPENVINO_DIR) is a folder ``segany convert`` wrote ahead of time, for
    example into an image at build time; it may be read-only. OpenVINO's compiled-model cache,
    when ``keep_compiled``, goes under ``cache_dir``. ``int8_calibration``: quantize to int8,
    calibrated on that folder's photos (ignored with ``prebuilt``).
    """
    images = calibration_images(int8_calibration) if int8_calibration and not prebuilt else None
    key = conversion_key(checkpoint, sha256, model_type, images)
    folder = prebuilt or cache_dir / "openvino" / key
    compiled_cache = cache_dir / "openvino-compiled" / key if keep_compiled else None
    converted = ConvertedEncoder(folder / "image_encoder.xml", compiled_cache)
    if converted.xml.is_file() and converted.xml.with_suffix(".bin").is_file():
        return converted
    if prebuilt:
        raise CheckpointError(f"SEGANY_OPENVINO_DIR={prebuilt} holds no image_encoder.xml/.bin; run `segany convert` into it.")
    if images:
        require_nncf()
    logger.warning("converting the %s image encoder to OpenVINO%s (once per checkpoint; minutes for vit_h) into %s",
                   model_type, f", int8 calibrated on {len(images)} images," if images else "", folder)
    convert_in_child(checkpoint, model_type, folder, int8_calibration)
    return converted


def served_from_folder(settings: Settings) -> tuple[ResolvedCheckpoint, str] | None:
    """SEGANY_OPENVINO_DIR as the whole model: with SEGANY_CHECKPOINT unset and the folder
    holding the prompt decoder (converted by this release's `segany convert`), the torch-free
    engine needs nothing else, so no checkpoint is resolved (no download, and an image can leave
    its checkpoint out: deploy/build.py). Returns the weights' identity as the manifest records it
    and the model type; None when SEGANY_CHECKPOINT names the weights (or no folder is set).
    Raises :func:`folder_without_checkpoint` when only the torch engine could serve the folder."""
    folder = settings.openvino_dir
    if folder is None or settings.checkpoint is not None:
        return None
    manifest = read_manifest(folder)
    if settings.decoder != "auto" or not (_has(folder / PROMPT_DECODER_XML) and manifest):
        raise folder_without_checkpoint(folder) if torch_available() else torch_needed_by(settings)
    model_type = manifest.get("model_type")
    if settings.model_type and model_type != settings.model_type:
        raise ConfigError(f"SEGANY_OPENVINO_DIR={folder} holds a {model_type} model but SEGANY_MODEL is "
                          f"{settings.model_type}: unset SEGANY_MODEL, or point SEGANY_OPENVINO_DIR at a {settings.model_type} conversion.")
    return ResolvedCheckpoint(folder / MANIFEST, f"SEGANY_OPENVINO_DIR={folder}", manifest.get("checkpoint_sha256")), model_type


def folder_without_checkpoint(folder: Path) -> ConfigError:
    """SEGANY_OPENVINO_DIR without SEGANY_CHECKPOINT where the torch engine would serve: resolving a
    checkpoint could serve other weights (an official download in place of fine-tuned ones)."""
    return ConfigError(f"SEGANY_OPENVINO_DIR={folder} is served without its checkpoint only on CPU, by OpenVINO, and "
                       "only when converted by this release with SEGANY_DECODER=auto; here the torch engine serves (CUDA, "
                       "SEGANY_ENCODER=torch or SEGANY_DECODER=torch, or an older conversion): set SEGANY_CHECKPOINT to "
                       "the checkpoint it was converted from, or convert again with `segany convert`.")


def check_prebuilt(folder: Path, precision: str) -> None:
    """An encoder from SEGANY_OPENVINO_DIR is int8 exactly when int8 was asked for."""
    weights = read_manifest(folder).get("weights", "float32")
    if (weights == "int8") != (precision == "int8"):
        fix = ("set SEGANY_PRECISION=int8" if weights == "int8" else
               "set SEGANY_PRECISION=fp32 (or bf16), or convert again with `segany convert --int8-calibration DIR`")
        raise ConfigError(f"SEGANY_OPENVINO_DIR={folder} holds a {weights} encoder but SEGANY_PRECISION is {precision}: {fix}.")


def convert_in_child(checkpoint: Path, model_type: str, folder: Path, int8_calibration: Path | None = None) -> None:
    """Run the conversion in a child process: its memory is returned to the system when it exits."""
    if not torch_available():
        raise without_torch(f"converting {checkpoint.name} to OpenVINO",
                            "point SEGANY_OPENVINO_DIR at the folder `segany convert` wrote (the image's /opt/segany/openvino)")
    command = [sys.executable, "-m", "runners.convert", "--checkpoint", str(checkpoint),
               "--model-type", model_type, "--out", str(folder)]
    if int8_calibration:
        command += ["--int8-calibration", str(int8_calibration)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode < 0:  # killed, on Linux most often by the kernel's out-of-memory killer
        raise CheckpointError(
            f"converting the image encoder to OpenVINO failed: the converting process was killed (signal "
            f"{-result.returncode}), most likely for lack of memory. Convert ahead of time on a larger machine "
            "(`segany convert`, then SEGANY_OPENVINO_DIR), or use SEGANY_ENCODER=torch to serve without OpenVINO."
        )
    if result.returncode != 0:
        raise CheckpointError(
            f"converting the image encoder to OpenVINO failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}. "
            "Use SEGANY_ENCODER=torch to serve without OpenVINO."
        )


def write_manifest(folder: Path, **fields: object) -> None:
    (folder / MANIFEST).write_text(json.dumps(fields, indent=2) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """What :func:`write_manifest` wrote into a converted folder; {} when it holds none (older)."""
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def _core(converted: ConvertedEncoder) -> Any:
    """An OpenVINO Core that reads and fills this encoder's compiled-model cache, if it keeps one."""
    import openvino as ov
    import openvino.properties as props

    core = ov.Core()
    if converted.compiled_cache is not None:
        core.set_property({props.cache_dir: str(converted.compiled_cache)})
    return core


def _config(inference_precision: Any, threads: int) -> dict[Any, Any]:
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {hints.performance_mode: hints.PerformanceMode.LATENCY, hints.inference_precision: inference_precision}
    if threads:
        config[props.inference_num_threads] = threads
    return config


def compile_converted(converted: ConvertedEncoder, precision: str, threads: int = 0) -> Any:
    """Compile the IR for this CPU (``precision`` "fp32", "bf16", or "int8" for a quantized IR, whose
    other operations then run in bf16 where the CPU has it); an ``openvino.CompiledModel``.

    Reads OpenVINO's compiled-model cache when it holds this model, and fills it otherwise.
    """
    import openvino as ov
    import openvino.properties as props

    core = _core(converted)
    mapped = [converted.xml.parent] + ([converted.compiled_cache] if converted.compiled_cache is not None else [])
    bf16_units = "BF16" in core.get_property("CPU", props.device.capabilities)
    if precision == "bf16" and not bf16_units:
        logger.warning("SEGANY_PRECISION=bf16: this CPU has no bf16 support; OpenVINO runs f32")
    fast = precision in ("bf16", "int8") and bf16_units
    with ReleasingMappedPages(mapped):  # the weights held once
        return core.compile_model(str(converted.xml), "CPU", _config(ov.Type.bf16 if fast else ov.Type.f32, threads))


class ThreadRequests:
    """An infer request of one compiled model per calling thread: requests of one model run
    concurrently (OpenVINO releases the GIL while one runs), a single request must not."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._local = threading.local()

    def get(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request


def _has(xml: Path) -> bool:
    return xml.is_file() and xml.with_suffix(".bin").is_file()


def compile_decoder(converted: ConvertedEncoder, threads: int = 0) -> Any | None:
    """The mask decoder converted beside the encoder, compiled in float32 whatever the encoder's
    precision (it is small, and its logits are thresholded into the masks); None when the folder
    has none (one converted before the decoder was, or `segany convert` of an older release)."""
    import openvino as ov

    if not _has(converted.decoder_xml):
        logger.info("%s holds no converted mask decoder; the decoder runs in torch (convert again to run it in "
                    "OpenVINO)", converted.xml.parent)
        return None
    return _core(converted).compile_model(str(converted.decoder_xml), "CPU", _config(ov.Type.f32, threads))


@dataclass(frozen=True)
class PromptGraphs:
    """What the torch-free engine (runners/converted_engine.py) decodes prompts with, each an
    ``openvino.CompiledModel``: the prompt decoder (runners/prompt_decoder.py), the mask upsampling
    (runners/upsample.py) and its ``scored`` variant for segment-everything."""

    prompt_decoder: Any
    upsampler: Any
    scored_upsampler: Any


def compile_prompt_decoder(converted: ConvertedEncoder, threads: int = 0) -> PromptGraphs | None:
    """The prompt decoder converted beside the encoder and the upsampling graphs, compiled in
    float32; None when the folder has no prompt decoder (converted by an older release: the torch
    engine serves it)."""
    import openvino as ov

    from .upsample import build_upsampler

    if not _has(converted.prompt_decoder_xml):
        logger.info("%s holds no converted prompt decoder; prompts are decoded with torch (convert again, "
                    "`segany convert`, to serve without torch)", converted.xml.parent)
        return None
    core, config = _core(converted), _config(ov.Type.f32, threads)
    return PromptGraphs(core.compile_model(str(converted.prompt_decoder_xml), "CPU", config),
                        *(core.compile_model(build_upsampler(scored), "CPU", config) for scored in (False, True)))


def encoder_files(settings: Settings, checkpoint: ResolvedCheckpoint, model_type: str, precision: str) -> ConvertedEncoder:
    """The converted encoder for a resolved checkpoint, as the settings ask (converting it first
    when no converted copy exists)."""
    if settings.openvino_dir is not None:
        check_prebuilt(settings.openvino_dir, precision)
    elif precision == "int8" and settings.int8_calibration is None:
        raise ConfigError("SEGANY_PRECISION=int8 quantizes the encoder on photos like the ones you will serve: set "
                          "SEGANY_INT8_CALIBRATION to a folder of 16-300 of them (JPEG, PNG or WebP), or "
                          "SEGANY_OPENVINO_DIR to an encoder made by `segany convert --int8-calibration DIR`.")
    return converted_encoder(settings.cache_dir, checkpoint.path, checkpoint.sha256, model_type,
                             settings.openvino_dir, settings.keeps_compiled_encoder,
                             settings.int8_calibration if precision == "int8" else None)


@dataclass(frozen=True)
class CompiledParts:
    """The compiled encoder and what decodes prompts: the prompt graphs (a torch-free engine,
    runners/converted_engine.py), or else the mask decoder (None: the decoder runs in torch).
    ``converted``: where they came from."""

    converted: ConvertedEncoder
    encoder: Any
    decoder: Any | None = None
    prompts: PromptGraphs | None = None


def compile_for(settings: Settings, checkpoint: ResolvedCheckpoint, model_type: str, precision: str) -> CompiledParts:
    """The compiled encoder and decoders for a resolved checkpoint, as the settings ask
    (converting them first when no converted copy exists). The mask decoder is compiled only
    where no prompt decoder is."""
    converted = encoder_files(settings, checkpoint, model_type, precision)
    encoder = compile_converted(converted, precision, settings.torch_threads)
    if settings.decoder != "auto":
        return CompiledParts(converted, encoder)
    prompts = compile_prompt_decoder(converted, settings.torch_threads)
    if prompts is not None:
        return CompiledParts(converted, encoder, prompts=prompts)
    return CompiledParts(converted, encoder, decoder=compile_decoder(converted, settings.torch_threads))
