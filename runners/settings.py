"""Every setting the runtime reads, read once from the environment into a frozen object.

``Settings.from_env()`` is the only place that touches ``os.environ`` for ``SEGANY_*``
variables and for the platform variables the runtime honours (``SM_MODEL_DIR``). A
malformed value raises :class:`ConfigError` naming the variable and an example.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from .errors import ConfigError

MODEL_TYPES = ("vit_h", "vit_l", "vit_b", "tiny")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BATCH_STACKING = ("auto", "stack", "sequential")
ENCODERS = ("auto", "torch", "openvino")
DECODERS = ("auto", "torch")
ATTENTIONS = ("auto", "exact", "sdpa")
COMPILED_CACHES = ("auto", "on", "off")
WARMUPS = ("auto", "full", "decoder", "off")
URL_SCHEMES = ("https", "http", "s3", "gs")
SAGEMAKER_MODEL_DIR = "/opt/ml/model"

T = TypeVar("T")


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "segment-anywhere"


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field docs name the variable that sets each one."""

    # SEGANY_MODEL: which SAM architecture to build (vit_h, vit_l, vit_b, tiny); None = read it
    # off the checkpoint's shapes (and download vit_h when no checkpoint is given).
    model_type: str | None = None
    # SEGANY_CHECKPOINT: path, http(s) URL, s3:// or gs:// URI; None = SageMaker model dir,
    # then the official download (or, for tiny, the deterministic checkpoint).
    checkpoint: str | None = None
    # SEGANY_CHECKPOINT_SHA256: expected digest of a checkpoint that is not an official file.
    checkpoint_sha256: str | None = None
    # SEGANY_CACHE_DIR: downloaded checkpoints and converted encoders.
    cache_dir: Path = field(default_factory=lambda: _default_cache_dir(os.environ))
    # SM_MODEL_DIR (SageMaker's variable) or /opt/ml/model.
    sagemaker_model_dir: Path = Path(SAGEMAKER_MODEL_DIR)
    # SEGANY_DEVICE: auto (CUDA when available), cpu or cuda.
    device: str = "auto"
    # SEGANY_PRECISION: encoder precision; auto = fp32 on CPU, bf16 autocast on CUDA. int8: the
    # OpenVINO encoder quantized at conversion (CPU), calibrated on SEGANY_INT8_CALIBRATION.
    precision: str = "auto"
    # SEGANY_INT8_CALIBRATION: a folder of photos like the ones served, for int8's calibration.
    int8_calibration: Path | None = None
    # SEGANY_ENCODER: image-encoder backend; auto = OpenVINO on CPU when installed, else torch.
    encoder: str = "auto"
    # SEGANY_DECODER: decoder backend; auto = OpenVINO (float32) when the encoder runs in OpenVINO
    # and was converted with its decoders: the prompt decoder (the torch-free engine, converter 7)
    # or else the mask decoder; torch = segment_anything's prompt encoder and mask decoder, in torch.
    decoder: str = "auto"
    # SEGANY_ATTENTION: the torch encoder's attention. exact = SAM's arithmetic (a few heads at a
    # time), sdpa = torch's scaled_dot_product_attention with the relative-position terms as its
    # mask (fused kernels on GPUs; equal up to rounding); auto = sdpa on CUDA, exact on CPU.
    attention: str = "auto"
    # SEGANY_OPENVINO_DIR: an encoder converted ahead of time by `segany convert` (else converted
    # on first start into the cache).
    openvino_dir: Path | None = None
    # SEGANY_COMPILED_CACHE: keep OpenVINO's compiled encoder (a blob as large as the weights)
    # under SEGANY_CACHE_DIR, so that later starts read it instead of compiling (vit_h: 4-6 s
    # instead of 8). auto = on, except for an encoder from SEGANY_OPENVINO_DIR (a baked image):
    # each instance of an image starts on a fresh disk, where writing the blob costs more than it
    # saves (vit_h: ~20 s and 2.7 GB, and Cloud Run's disk is memory).
    compiled_cache: str = "auto"
    # SEGANY_TORCH_THREADS: intra-op threads for torch; 0 = torch's default (all cores).
    torch_threads: int = 0
    # SEGANY_CACHE_MB: bound of the image-embedding cache, in MiB.
    embedding_cache_mb: float = 1024.0
    # SEGANY_MAX_BATCH_SIZE / SEGANY_MAX_LATENCY_MS: BentoML adaptive batching of the encoder
    # (1 = no batching: each image is its own encoder call).
    max_batch_size: int = 8
    max_latency_ms: int = 300_000
    # SEGANY_BATCH_STACKING: how a batch runs. "stack": one encoder forward over all images;
    # "sequential": one image after another, each handed back as soon as it is done; "auto":
    # stack on GPUs, sequential on CPUs, where a stacked vit_b batch measured slower per image
    # (23 s per image in a batch of 3 against 19.5 s alone).
    batch_stacking: str = "auto"
    # SEGANY_REQUEST_TIMEOUT_S: BentoML traffic timeout for one request.
    request_timeout_s: int = 900
    # SEGANY_MAX_BODY_MB: largest request body (and largest image_url download).
    max_body_mb: float = 32.0
    # SEGANY_MAX_IMAGE_PIXELS: decompression-bomb cap on width*height.
    max_image_pixels: int = 64_000_000
    # SEGANY_MAX_IMAGE_SIDE: largest width or height.
    max_image_side: int = 16_384
    # SEGANY_MAX_POINTS / SEGANY_MAX_BOXES: prompt counts per request.
    max_points: int = 64
    max_boxes: int = 64
    # SEGANY_MAX_POINTS_PER_SIDE: cap for segment-everything's grid (n*n decoder prompts).
    max_points_per_side: int = 64
    # SEGANY_URL_SCHEMES: schemes image_url may use.
    url_schemes: tuple[str, ...] = ("https", "s3", "gs")
    # SEGANY_URL_ALLOW_HOSTS: hosts (or IPs) allowed even when they resolve to private,
    # loopback or link-local addresses. Empty = none.
    url_allow_hosts: tuple[str, ...] = ()
    # SEGANY_URL_TIMEOUT_S: total time for one image_url download.
    url_timeout_s: float = 15.0
    # SEGANY_WARMUP: before reporting ready, "full" runs one encoder and one decoder forward,
    # "decoder" only a decoder forward (the encoder is compiled/loaded but not run), "off" none.
    # auto = "decoder" for the OpenVINO encoder (compiled before ready: its first forward is no
    # slower than the next, so a full warm-up would only delay readiness by one encoder run,
    # vit_h ~50 s on 2 cores), "full" for torch (CUDA's first forward initialises its libraries).
    warmup: str = "auto"

    @property
    def keeps_compiled_encoder(self) -> bool:
        return self.compiled_cache == "on" or (self.compiled_cache == "auto" and self.openvino_dir is None)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def embedding_cache_bytes(self) -> int:
        return int(self.embedding_cache_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        read = EnvReader(env)
        settings = cls(
            model_type=read.choice("SEGANY_MODEL", MODEL_TYPES, None),
            checkpoint=read.text("SEGANY_CHECKPOINT"),
            checkpoint_sha256=read.sha256("SEGANY_CHECKPOINT_SHA256"),
            cache_dir=read.path("SEGANY_CACHE_DIR") or _default_cache_dir(env),
            sagemaker_model_dir=read.path("SM_MODEL_DIR") or Path(SAGEMAKER_MODEL_DIR),
            device=read.choice("SEGANY_DEVICE", DEVICES, cls.device),
            precision=read.choice("SEGANY_PRECISION", PRECISIONS, cls.precision),
            int8_calibration=read.path("SEGANY_INT8_CALIBRATION"),
            encoder=read.choice("SEGANY_ENCODER", ENCODERS, cls.encoder),
            decoder=read.choice("SEGANY_DECODER", DECODERS, cls.decoder),
            attention=read.choice("SEGANY_ATTENTION", ATTENTIONS, cls.attention),
            openvino_dir=read.path("SEGANY_OPENVINO_DIR"),
            compiled_cache=read.choice("SEGANY_COMPILED_CACHE", COMPILED_CACHES, cls.compiled_cache),
            torch_threads=read.number("SEGANY_TORCH_THREADS", int, cls.torch_threads, minimum=0),
            embedding_cache_mb=read.number("SEGANY_CACHE_MB", float, cls.embedding_cache_mb, minimum=0),
            max_batch_size=read.number("SEGANY_MAX_BATCH_SIZE", int, cls.max_batch_size, minimum=1),
            max_latency_ms=read.number("SEGANY_MAX_LATENCY_MS", int, cls.max_latency_ms, minimum=1),
            batch_stacking=read.choice("SEGANY_BATCH_STACKING", BATCH_STACKING, cls.batch_stacking),
            request_timeout_s=read.number("SEGANY_REQUEST_TIMEOUT_S", int, cls.request_timeout_s, minimum=1),
            max_body_mb=read.number("SEGANY_MAX_BODY_MB", float, cls.max_body_mb, minimum=0.001),
            max_image_pixels=read.number("SEGANY_MAX_IMAGE_PIXELS", int, cls.max_image_pixels, minimum=1),
            max_image_side=read.number("SEGANY_MAX_IMAGE_SIDE", int, cls.max_image_side, minimum=1),
            max_points=read.number("SEGANY_MAX_POINTS", int, cls.max_points, minimum=1),
            max_boxes=read.number("SEGANY_MAX_BOXES", int, cls.max_boxes, minimum=1),
            max_points_per_side=read.number("SEGANY_MAX_POINTS_PER_SIDE", int, cls.max_points_per_side, minimum=1),
            url_schemes=read.items("SEGANY_URL_SCHEMES", cls.url_schemes, allowed=URL_SCHEMES),
            url_allow_hosts=read.items("SEGANY_URL_ALLOW_HOSTS", cls.url_allow_hosts),
            url_timeout_s=read.number("SEGANY_URL_TIMEOUT_S", float, cls.url_timeout_s, minimum=0.001),
            warmup=read.warmup("SEGANY_WARMUP", cls.warmup),
        )
        return settings


class EnvReader:
    """Parses one kind of value each; every failure names the variable and an example.
    (Also read by deploy/entrypoint.py for the container's own variables.)"""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        raw = self.text(name) or default
        if raw is None:
            return None
        value = raw.lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}; for example {name}={choices[0]}.")
        return value

    def number(self, name: str, kind: Callable[[str], T], default: T, *, minimum: float) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}; for example {name}={default}.") from None
        if value < minimum:  # type: ignore[operator]
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}; for example {name}={default}.")
        return value

    def warmup(self, name: str, default: str) -> str:
        raw = (self.text(name) or default).lower()
        aliases = {"1": "full", "true": "full", "on": "full", "0": "off", "false": "off", "no": "off"}
        value = aliases.get(raw, raw)
        if value not in WARMUPS:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(WARMUPS)}; for example {name}=auto.")
        return value

    def items(self, name: str, default: tuple[str, ...], allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        raw = self.env.get(name)
        if raw is None:
            return default
        items = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
        if allowed is not None:
            unknown = [item for item in items if item not in allowed]
            if unknown:
                raise ConfigError(f"{name} has unknown entries {unknown}; allowed: {', '.join(allowed)}.")
        return items

    def sha256(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        digest = raw.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{name} must be 64 hex characters (the output of `sha256sum FILE`), got {raw!r}.")
        return digest
