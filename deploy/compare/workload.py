"""The workload ``segany compare`` runs and prices: images, a request mix and a traffic profile.

A TOML (or JSON) file, checked with pydantic at the edge and turned into frozen dataclasses::

    name = "interactive"
    model = "vit_h"
    [[images]]                       # a photo, relative to the file
    id = "dog"
    path = "../shared/images/dog.jpg"
    [[images]]                       # or generated: noise JPEG sized between min and max bytes
    id = "phone-12mp"
    generate = { width = 4000, height = 3000, min_bytes = 4_300_000, max_bytes = 6_000_000 }
    [mix]                            # shares of requests by kind (normalised to 1)
    point = 0.2                      # the first prompt on an image: the encoder runs
    point_cached = 0.7               # further prompts on the same image by image_id
    everything = 0.1                 # automatic mask generation
    [traffic]
    requests_per_day = 120
    burst_size = 12                  # requests in one burst (a user's session)
    think_time_s = 10                # between requests inside a burst
    idle_gap_s = 3600                # between bursts, during the active hours
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KINDS = ("point", "point_cached", "everything")
# What a request of each kind sends and gets back, besides the image: a prompt on a cached
# image_id sends only the prompt; answers are masks (RLE/PNG), everything's many of them.
PROMPT_BYTES = 200
DEFAULT_RESPONSE_BYTES = {"point": 40_000, "point_cached": 40_000, "everything": 1_500_000}
DEFAULT_WORKLOAD = Path(__file__).with_name("default_workload.toml")


# --- the file, as pydantic checks it -----------------------------------------------------------
class _Generate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(4000, ge=16, le=20000)
    height: int = Field(3000, ge=16, le=20000)
    seed: int = 0
    noise: float = Field(40.0, ge=0, le=128)  # std of the noise over a smooth gradient
    quality: int = Field(95, ge=10, le=100)  # the starting JPEG quality
    min_bytes: int | None = Field(None, ge=0)
    max_bytes: int | None = Field(None, ge=1)


class _Image(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    path: str | None = None
    generate: _Generate | None = None

    @model_validator(mode="after")
    def _one_source(self) -> _Image:
        if (self.path is None) == (self.generate is None):
            raise ValueError(f"image {self.id!r}: give exactly one of path or generate")
        return self


class _Mix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    point: float = Field(0.0, ge=0)
    point_cached: float = Field(0.0, ge=0)
    everything: float = Field(0.0, ge=0)
    response_bytes: dict[Literal["point", "point_cached", "everything"], int] = {}

    @model_validator(mode="after")
    def _some(self) -> _Mix:
        if self.point + self.point_cached + self.everything <= 0:
            raise ValueError("mix: give at least one kind a share above 0")
        if self.point_cached > 0 and self.point == 0:
            raise ValueError("mix: point_cached needs point (a prompt on an image_id follows a first prompt)")
        return self


class _Traffic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_day: float = Field(gt=0)
    burst_size: float = Field(1, ge=1)
    think_time_s: float = Field(0, ge=0)
    idle_gap_s: float = Field(3600, ge=0)


class _Workload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "workload"
    model: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "vit_h"
    images: list[_Image] = Field(min_length=1)
    mix: _Mix
    traffic: _Traffic


# --- inside: frozen dataclasses ------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratedImage:
    width: int
    height: int
    seed: int = 0
    noise: float = 40.0
    quality: int = 95
    min_bytes: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class ImageSpec:
    id: str
    path: Path | None = None
    generate: GeneratedImage | None = None


@dataclass(frozen=True)
class RequestKind:
    name: str  # one of KINDS
    share: float  # of all requests, the shares sum to 1
    response_bytes: int


@dataclass(frozen=True)
class TrafficProfile:
    requests_per_day: float
    burst_size: float = 1
    think_time_s: float = 0
    idle_gap_s: float = 3600

    @property
    def bursts_per_day(self) -> float:
        return self.requests_per_day / self.burst_size

    def with_requests_per_day(self, requests_per_day: float) -> TrafficProfile:
        return replace(self, requests_per_day=requests_per_day)


@dataclass(frozen=True)
class Demand:
    """What the cost model needs: the traffic, the mix, and the mean image a request sends."""

    profile: TrafficProfile
    kinds: tuple[RequestKind, ...]
    image_bytes: float  # the mean size of an image sent (point and everything send one)

    def share(self, kind: str) -> float:
        return sum(k.share for k in self.kinds if k.name == kind)

    def request_bytes(self, kind: str) -> float:
        return PROMPT_BYTES + (0 if kind == "point_cached" else self.image_bytes)

    def mean_bytes_in(self) -> float:
        return sum(k.share * self.request_bytes(k.name) for k in self.kinds)

    def mean_bytes_out(self) -> float:
        return sum(k.share * k.response_bytes for k in self.kinds)

    def with_requests_per_day(self, requests_per_day: float) -> Demand:
        return replace(self, profile=self.profile.with_requests_per_day(requests_per_day))


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    images: tuple[ImageSpec, ...]
    kinds: tuple[RequestKind, ...]
    profile: TrafficProfile
    source: Path | None = None

    def demand(self, image_sizes: dict[str, int]) -> Demand:
        """The cost model's input, given each image's size in bytes (see :func:`materialize`)."""
        sizes = [image_sizes[i.id] for i in self.images]
        return Demand(self.profile, self.kinds, sum(sizes) / len(sizes))


def parse_workload(data: dict, base: Path | None = None) -> Workload:
    w = _Workload.model_validate(data)
    base = base or Path.cwd()
    images = tuple(
        ImageSpec(i.id, (base / i.path).resolve() if i.path else None,
                  GeneratedImage(**i.generate.model_dump()) if i.generate else None)
        for i in w.images)
    if len({i.id for i in images}) != len(images):
        raise ValueError("images: ids must be unique")
    total = w.mix.point + w.mix.point_cached + w.mix.everything
    kinds = tuple(RequestKind(k, getattr(w.mix, k) / total, w.mix.response_bytes.get(k, DEFAULT_RESPONSE_BYTES[k]))
                  for k in KINDS if getattr(w.mix, k) > 0)
    t = w.traffic
    profile = TrafficProfile(t.requests_per_day, t.burst_size, t.think_time_s, t.idle_gap_s)
    return Workload(w.name, w.model, images, kinds, profile)


def load_workload(path: str | Path | None = None) -> Workload:
    """Read a workload file (``.toml`` or ``.json``); paths in it are relative to the file."""
    path = Path(path) if path else DEFAULT_WORKLOAD
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return replace(parse_workload(data, path.parent), source=path)


# --- images ----------------------------------------------------------------------------------
def _noise_jpeg(spec: GeneratedImage, quality: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(spec.seed)
    y, x = np.mgrid[0:spec.height, 0:spec.width].astype(np.float32)
    base = np.stack([x / spec.width * 255, y / spec.height * 255, (x + y) / (spec.width + spec.height) * 255], -1)
    pixels = np.clip(base + rng.normal(0, spec.noise, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def generate_jpeg(spec: GeneratedImage) -> bytes:
    """A phone-photo-sized JPEG of noise over a gradient (noise defeats compression, so the file is
    large); the quality is searched downward/upward until the size lies in [min_bytes, max_bytes]."""
    lo, hi = 10, 100
    quality = spec.quality
    for _ in range(8):
        data = _noise_jpeg(spec, quality)
        small = spec.min_bytes is not None and len(data) < spec.min_bytes
        large = spec.max_bytes is not None and len(data) > spec.max_bytes
        if not (small or large):
            return data
        if small:
            lo = quality + 1
        else:
            hi = quality - 1
        if lo > hi:
            break
        quality = (lo + hi) // 2
    raise ValueError(f"no JPEG quality gives {spec.width}x{spec.height} noise {spec.noise} between "
                     f"{spec.min_bytes} and {spec.max_bytes} bytes (last: {len(data)}); change noise or the bounds")


def materialize(workload: Workload, out_dir: str | Path) -> dict[str, Path]:
    """Every image of the workload as a file: photos as they are, generated ones written to out_dir
    (reused when already there)."""
    out_dir = Path(out_dir)
    paths = {}
    for image in workload.images:
        if image.path is not None:
            if not image.path.is_file():
                raise FileNotFoundError(f"image {image.id!r}: {image.path} not found")
            paths[image.id] = image.path
            continue
        target = out_dir / f"{image.id}.jpg"
        if not target.is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            target.write_bytes(generate_jpeg(image.generate))
        paths[image.id] = target
    return paths


def image_sizes(paths: dict[str, Path]) -> dict[str, int]:
    return {image_id: path.stat().st_size for image_id, path in paths.items()}


def over_request_caps(sizes: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """{target: the image ids whose raw-body request would exceed its cap} (deploy/limits.py), i.e.
    the requests that need a workaround there (S3 upload, async, a smaller image)."""
    from deploy.limits import CLOUD_RUN, SAGEMAKER

    caps = {f"sagemaker-{mode}": lim.request_bytes for mode, lim in SAGEMAKER.items()}
    caps["cloudrun"] = CLOUD_RUN.request_bytes
    return {target: tuple(i for i, size in sizes.items() if cap is not None and size + PROMPT_BYTES > cap)
            for target, cap in caps.items()}
