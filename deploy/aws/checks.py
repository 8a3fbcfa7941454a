"""What a release must satisfy before any call that changes the account: the image and model
against the mode's limits (serverless memory, image size, GPU, start-up deadlines), each refusal
naming the fix. Pure functions of the settings and what is known of the image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from deploy import limits
from deploy.aws.instances import instance_type
from deploy.aws.settings import AwsSettings, serverless_memory_for, startup_budget_s
from runners.errors import ConfigError

logger = logging.getLogger(__name__)

LABEL_DEVICE = "io.segment-anywhere.device"
LABEL_MODEL = "io.segment-anywhere.model"
LABEL_WEIGHTS = "io.segment-anywhere.weights"


@dataclass(frozen=True)
class ImageFacts:
    labels: dict[str, str] | None  # None: an image built elsewhere, nothing known
    size_bytes: int | None = None

    @property
    def device(self) -> str | None:
        return (self.labels or {}).get(LABEL_DEVICE)

    @property
    def baked_model(self) -> str | None:
        return (self.labels or {}).get(LABEL_MODEL) or None

    @property
    def converted(self) -> bool | None:
        """The image holds the OpenVINO-converted model (cpu bake); None: unknown."""
        if self.labels is None:
            return None
        return self.labels.get(LABEL_WEIGHTS) == "converted"


@dataclass(frozen=True)
class Sizing:
    model: str
    memory_mb: int | None  # serverless
    startup_s: int
    download_s: int
    notes: tuple[str, ...] = ()


def check_release(s: AwsSettings, image: ImageFacts, model: str, weights_at_start: bool) -> Sizing:
    """Raise ConfigError for what the mode cannot run; return the sizes the deploy will use."""
    notes: list[str] = []
    # a checkpoint given at deploy time is never converted into the image: the server converts it at start
    converts = weights_at_start or image.converted is False
    unknown = image.labels is None and not weights_at_start
    if unknown and model != "tiny":
        notes.append("the image's labels are unknown (built elsewhere): if it lacks the converted model, the server "
                     f"converts {model} at start (about {limits.CONVERSION_S[model] // 60} min on 2 cores)")
        logger.warning(notes[-1])
    bake = f"bake the model into the image: segany build --bake-weights CHECKPOINT (then deploy that image)"
    if s.mode == "serverless":
        if image.device == "cuda":
            raise ConfigError("serverless endpoints have no GPU (serverless-endpoints.html); build the cpu image "
                              "(segany build --device cpu) or choose --mode realtime with a GPU instance type")
        if image.size_bytes and image.size_bytes > limits.SAGEMAKER["serverless"].image_bytes:
            raise ConfigError(f"the image is {image.size_bytes / 1e9:.1f} GB, over serverless' 10 GB "
                              "(serverless-endpoints.html); bake weights into the cpu image (torch left out) or use --mode realtime")
        need = serverless_memory_for(model)
        if not need:
            raise ConfigError(f"{model} needs more than serverless' 6144 MB; choose --mode realtime or async")
        memory = s.memory_mb or need
        if memory < need:
            raise ConfigError(f"--memory-mb {memory} is too small for {model}: its server peaks at "
                              f"{limits.MODEL_PEAK_MB[model]} MB (bench/results/coldstart.json); give --memory-mb {need} or more")
        if converts and model != "tiny":
            raise ConfigError(f"{model} would be converted at start (about {limits.CONVERSION_S[model] // 60} min), "
                              f"but serverless waits {limits.SERVERLESS_PING_DEADLINE_S // 60} min for /ping; {bake}")
        return Sizing(model, memory, 0, 0, tuple(notes))
    budget = startup_budget_s(model, converts or unknown, weights_at_start)
    if s.mode in ("realtime", "async"):
        given = s.health_check_timeout_s
        if given is not None and given < budget:
            raise ConfigError(f"--health-check-timeout-s {given} does not cover {model}'s start "
                              f"({'conversion, ' if converts else ''}about {budget} s with margin); give "
                              f"--health-check-timeout-s {budget}, or {bake}")
        kind = instance_type(s.instance_type)
        need_mb = limits.MODEL_PEAK_MB[model] * limits.MEMORY_HEADROOM
        if kind and kind.memory_gib * 1024 < need_mb:
            raise ConfigError(f"--instance-type {s.instance_type} has {kind.memory_gib} GiB, too little for {model} "
                              f"(peaks at {limits.MODEL_PEAK_MB[model]} MB); choose a larger instance, e.g. ml.m5.xlarge")
        if kind and image.device == "cuda" and not kind.gpu:
            raise ConfigError(f"the image is the cuda build but {s.instance_type} has no GPU; choose a GPU instance "
                              "(ml.g4dn.xlarge, ml.g5.xlarge) or deploy the cpu image")
        if kind and kind.gpu and image.device == "cpu":
            notes.append(f"{s.instance_type} has a GPU ({kind.gpu}) the cpu image does not use; build --device cuda")
            logger.warning(notes[-1])
    startup = s.health_check_timeout_s or budget
    download = s.download_timeout_s or budget
    return Sizing(model, None, startup, download, tuple(notes))
