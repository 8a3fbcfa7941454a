"""``segany deploy aws`` settings: flags over the ``[aws]`` table of the config file, checked
here before any call. Each range cites the API reference page that sets it (the numbers live in
deploy/limits.py); a value moto would accept but AWS rejects is caught here.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deploy import limits
from deploy.aws.instances import INSTANCE_TYPES, instance_type
from deploy.release import RELEASE_LENGTH

MODES = ("serverless", "realtime", "async", "batch")
MODEL_TYPES = ("tiny", "vit_b", "vit_l", "vit_h")
DEPLOYMENTS = ("all-at-once", "canary", "linear")
# Flags that mean something in some modes only: given in another mode they are an error, not ignored.
MODE_KEYS = {
    "memory_mb": ("serverless",), "max_concurrency": ("serverless",), "provisioned_concurrency": ("serverless",),
    "instance_type": ("realtime", "async", "batch"), "instance_count": ("realtime", "async", "batch"),
    "min_instances": ("realtime", "async"), "max_instances": ("realtime", "async"),
    "output": ("async", "batch"), "input": ("batch",), "max_payload_mb": ("batch",),
    "invocations_timeout_s": ("batch",), "sns_success_topic": ("async",), "sns_error_topic": ("async",),
    "max_concurrent_invocations": ("async",), "health_check_timeout_s": ("realtime", "async"),
    "download_timeout_s": ("realtime", "async"), "invocations_per_instance": ("realtime",),
    "backlog_per_instance": ("async",), "deployment": ("serverless", "realtime", "async"),
}


class AwsSettings(BaseModel):
    """Every key of the ``[aws]`` table; the flag of each is ``--`` and the key with dashes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["serverless", "realtime", "async", "batch"]
    endpoint: str = Field(description="the deployment's name: the Endpoint (batch: the models' and jobs' prefix)")
    image: str | None = None  # an image already in a registry SageMaker can pull (ECR)
    oci_archive: str | None = None  # or an OCI archive from `segany build --oci-archive`, pushed to ECR
    local_image: str | None = None  # or a local image from `segany build` (containers-storage/docker)
    repository: str = "segment-anywhere"  # the ECR repository pushed to
    registry: str | None = None  # push here instead of the account's ECR (a mirror SageMaker pulls from; tests)
    model: Literal["tiny", "vit_b", "vit_l", "vit_h"] | None = None  # default: what the image says it carries
    checkpoint: str | None = None  # weights not baked: s3://, https:// or a local .pth (packaged and uploaded)
    bucket: str | None = None  # for model.tar.gz and invoke uploads; default segany-ACCOUNT-REGION
    role_arn: str | None = None
    create_role: bool = False
    region: str | None = None
    env: dict[str, str] = Field(default_factory=dict)  # more SEGANY_* variables for the container
    # serverless
    memory_mb: int | None = None
    max_concurrency: int = 5
    provisioned_concurrency: int | None = None
    # real-time, async, batch
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    min_instances: int | None = None  # realtime default = instance_count; 0: scale to zero; async default 0
    max_instances: int | None = None
    health_check_timeout_s: int | None = None  # default sized to the model (download + conversion)
    download_timeout_s: int | None = None
    invocations_per_instance: float = 10  # target tracking: invocations a minute per instance
    backlog_per_instance: float = 2  # async target tracking: queued requests per instance
    # async
    output: str | None = None  # s3:// results (batch: one prefix per run under it)
    sns_success_topic: str | None = None
    sns_error_topic: str | None = None
    max_concurrent_invocations: int = 1
    # batch
    input: str | None = None
    max_payload_mb: int = 6
    invocations_timeout_s: int = 600
    task: Literal["everything", "segment", "embed"] = "everything"  # what each batch record or async request asks
    task_options: str = ""  # more custom attributes, e.g. "output=rle;points_per_side=16"
    # releases
    deployment: Literal["all-at-once", "canary", "linear"] = "all-at-once"
    traffic_percent: int = 10  # canary: the first share; linear: each step's
    wait_s: int = 300  # between traffic steps (canary, linear), watching the alarms
    poll_s: float = 15  # how often waits ask

    @field_validator("endpoint")
    @classmethod
    def _name(cls, value: str) -> str:
        longest = limits.SAGEMAKER_NAME_MAX - RELEASE_LENGTH - 1
        if not re.match(limits.SAGEMAKER_NAME_PATTERN, value) or len(value) > longest:
            raise ValueError(f"letters, digits and hyphens, starting with a letter or digit, at most {longest} characters "
                             "(SageMaker names are at most 63 and each release adds -RELEASE; API_CreateEndpoint)")
        return value

    @field_validator("output", "input")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", value):
            raise ValueError("an s3://bucket/prefix URI")
        return value.rstrip("/") if value else value

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^arn:aws[a-z\-]*:iam::\d{12}:role/.+$", value):
            raise ValueError("an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME (API_CreateModel ExecutionRoleArn)")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [key for key in value if not key.startswith("SEGANY_")]
        if bad:
            raise ValueError(f"only SEGANY_* variables ({', '.join(bad)} is not)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "AwsSettings":
        problems = [p for p in (self._mode_keys(), self._sources(), self._ranges(), self._scaling()) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _mode_keys(self) -> str | None:
        misplaced = [key for key, modes in MODE_KEYS.items() if self.mode not in modes and key in self.model_fields_set]
        if misplaced:
            return (f"{', '.join('--' + k.replace('_', '-') for k in misplaced)} do not apply to --mode {self.mode} "
                    f"(drop them, or choose the mode they belong to: "
                    f"{'; '.join(k + ': ' + '/'.join(MODE_KEYS[k]) for k in misplaced)})")
        return None

    def _sources(self) -> str | None:
        given = [name for name in ("image", "oci_archive", "local_image") if getattr(self, name)]
        if len(given) > 1:
            return f"give one image source, not {' and '.join('--' + g.replace('_', '-') for g in given)}"
        if not given:
            return "give the image: --image REF (in ECR), --oci-archive FILE or --local-image REF (from segany build)"
        if self.mode == "async" and not self.output:
            return "--mode async needs --output s3://bucket/prefix for its results (AsyncInferenceConfig.OutputConfig)"
        if self.mode == "batch" and not (self.input and self.output):
            return "--mode batch needs --input s3://... and --output s3://... (CreateTransformJob)"
        if not (self.role_arn or self.create_role):
            return "give --role-arn ARN (an execution role SageMaker assumes) or --create-role"
        return None

    def _ranges(self) -> str | None:
        if self.mode == "serverless":
            if self.memory_mb is not None and self.memory_mb not in limits.SERVERLESS_MEMORY_MB:
                return (f"--memory-mb {self.memory_mb}: one of {', '.join(map(str, limits.SERVERLESS_MEMORY_MB))} "
                        "(API_ProductionVariantServerlessConfig)")
            low, high = limits.SERVERLESS_MAX_CONCURRENCY
            if not low <= self.max_concurrency <= high:
                return f"--max-concurrency {self.max_concurrency}: {low}-{high} (API_ProductionVariantServerlessConfig)"
            if self.provisioned_concurrency is not None and not low <= self.provisioned_concurrency <= self.max_concurrency:
                return (f"--provisioned-concurrency {self.provisioned_concurrency}: {low} to --max-concurrency "
                        f"({self.max_concurrency}) (API_ProductionVariantServerlessConfig)")
            return None
        if instance_type(self.instance_type) is None:
            families = sorted({name.rsplit(".", 1)[0] for name in INSTANCE_TYPES})
            return (f"--instance-type {self.instance_type} is not one this project knows; choose one of "
                    f"{', '.join(sorted(INSTANCE_TYPES))} (families {', '.join(families)})")
        if self.instance_count < 1:
            return "--instance-count: at least 1 (API_ProductionVariant InitialInstanceCount)"
        low, high = limits.STARTUP_TIMEOUT_S
        for key in ("health_check_timeout_s", "download_timeout_s"):
            value = getattr(self, key)
            if value is not None and not low <= value <= high:
                return f"--{key.replace('_', '-')} {value}: {low}-{high} seconds (API_ProductionVariant)"
        if self.mode == "batch":
            low, high = limits.BATCH_MAX_PAYLOAD_MB
            if not low < self.max_payload_mb <= high:
                return f"--max-payload-mb {self.max_payload_mb}: 1-{high} (API_CreateTransformJob MaxPayloadInMB)"
            low, high = limits.BATCH_INVOCATION_TIMEOUT_S
            if not low <= self.invocations_timeout_s <= high:
                return f"--invocations-timeout-s {self.invocations_timeout_s}: {low}-{high} (API_ModelClientConfig)"
        low, high = limits.ASYNC_MAX_CONCURRENT_INVOCATIONS
        if not low <= self.max_concurrent_invocations <= high:
            return f"--max-concurrent-invocations: {low}-{high} (API_AsyncInferenceClientConfig)"
        return None

    def _scaling(self) -> str | None:
        if self.mode not in ("realtime", "async"):
            return None
        low, high = self.scaling_bounds
        if low < 0 or high < max(low, 1):
            return f"--min-instances {low} / --max-instances {high}: 0 <= min <= max and max >= 1"
        if self.deployment != "all-at-once" and not 1 <= self.traffic_percent <= 99:
            return f"--traffic-percent {self.traffic_percent}: 1-99 (API_CapacitySize, CAPACITY_PERCENT)"
        return None

    @property
    def scaling_bounds(self) -> tuple[int, int]:
        """(min, max) instances; async scales to zero unless told otherwise (async-inference-autoscale.html)."""
        low = self.min_instances if self.min_instances is not None else (0 if self.mode == "async" else self.instance_count)
        high = self.max_instances if self.max_instances is not None else max(low, self.instance_count)
        return low, high

    @property
    def scale_to_zero_realtime(self) -> bool:
        """Real-time from zero needs the model as an inference component (endpoint-auto-scaling-zero-instances.html)."""
        return self.mode == "realtime" and self.scaling_bounds[0] == 0

    @property
    def custom_attributes(self) -> str:
        """What batch records and async requests ask of the container (deploy/aws/contract.py reads it)."""
        return ";".join(part for part in (f"task={self.task}", self.task_options.strip(";")) if part)


def startup_budget_s(model: str, converts_at_start: bool, download: bool) -> int:
    """Seconds a container needs from start to a healthy /ping: the weights' download and, when
    the image lacks the converted model, the conversion (deploy/limits.py's measured figures),
    with 50% margin, within the API's 60-3600."""
    need = 60 + (limits.WEIGHTS_MB[model] / 100 if download else 0) + (limits.CONVERSION_S[model] if converts_at_start else 0)
    low, high = limits.STARTUP_TIMEOUT_S
    return int(min(high, max(low, math.ceil(need * 1.5 / 60) * 60)))


def serverless_memory_for(model: str) -> int:
    """The smallest serverless memory size that holds the model's measured peak with headroom."""
    need = limits.MODEL_PEAK_MB[model] * limits.MEMORY_HEADROOM
    for size in limits.SERVERLESS_MEMORY_MB:
        if size >= need:
            return size
    return 0  # none does
