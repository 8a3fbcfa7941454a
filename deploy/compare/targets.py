"""The targets ``segany compare`` prices, each a frozen settings object carrying its measured
:class:`~deploy.compare.timing.Timing`; ranges checked against deploy/limits.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Union

from deploy import limits
from deploy.compare.timing import Timing


@dataclass(frozen=True)
class SageMakerRealtime:
    timing: Timing
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    name: str = "sagemaker-realtime"


@dataclass(frozen=True)
class SageMakerServerless:
    timing: Timing
    memory_mb: int = 6144
    free_tier: bool = False  # 150,000 s a month, the first 2 months only
    name: str = "sagemaker-serverless"

    def __post_init__(self) -> None:
        if self.memory_mb not in limits.SERVERLESS_MEMORY_MB:
            raise ValueError(f"memory_mb {self.memory_mb}: one of {limits.SERVERLESS_MEMORY_MB}")


@dataclass(frozen=True)
class SageMakerAsync:
    timing: Timing  # cold_start_s: an instance's launch from zero (billed)
    instance_type: str = "ml.m5.xlarge"
    min_instances: int = 0
    idle_scale_down_s: float = 900  # backlog 0 long enough for the scale-in alarm, then cooldown
    retention_days: float = 1  # inputs and outputs kept in S3
    name: str = "sagemaker-async"


@dataclass(frozen=True)
class SageMakerBatch:
    timing: Timing  # cold_start_s: a job's instance launch (billed)
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    jobs_per_day: float = 1
    name: str = "sagemaker-batch"


@dataclass(frozen=True)
class CloudRun:
    timing: Timing
    cpu: int = 4
    memory_gib: float = 6
    billing: str = "request"  # "request" (CPU only while requests run) or "instance"
    min_instances: int = 0
    gpu: str | None = None  # "nvidia-l4": instance-based billing only
    zonal_redundancy: bool = True
    idle_scale_down_s: float = 900  # an idle instance is kept up to 15 minutes
    free_tier: bool = True
    name: str = "cloudrun"

    def __post_init__(self) -> None:
        if self.billing not in ("request", "instance"):
            raise ValueError(f"billing {self.billing!r}: request or instance")
        if self.gpu and self.billing != "instance":
            raise ValueError("a GPU on Cloud Run needs instance-based billing")
        need = limits.CLOUD_RUN_GPU.get(self.gpu, {}) if self.gpu else {}
        if self.gpu and (not need or self.cpu < need["min_cpu"] or self.memory_gib < need["min_memory_gib"]):
            raise ValueError(f"gpu {self.gpu!r}: known {list(limits.CLOUD_RUN_GPU)}, with at least {need or '?'}")


@dataclass(frozen=True)
class CloudRunJob:
    timing: Timing  # cold_start_s: a task's start (the model loads in every task)
    cpu: int = 4
    memory_gib: float = 6
    tasks_per_day: float = 1  # one task per request when each request is a job
    free_tier: bool = True  # jobs are billed at the instance-based rates, with their free tier
    name: str = "cloudrun-job"


Target = Union[SageMakerRealtime, SageMakerServerless, SageMakerAsync, SageMakerBatch, CloudRun, CloudRunJob]


def default_targets(model: str, timing: Timing, *, async_launch_s: float = 300,
                    gpu_timing: Timing | None = None) -> list[Target]:
    """Every target with the settings ``segany deploy`` would choose for ``model`` (serverless
    memory and Cloud Run CPU/memory from the deploy settings' defaults), all given ``timing``;
    async and batch pay ``async_launch_s`` per instance launch; an L4 service is added when its
    own timing is given."""
    from deploy.aws.settings import AwsSettings, serverless_memory_for
    from deploy.gcp.settings import DEFAULT_RESOURCES, memory_gib

    instance_type = AwsSettings.model_fields["instance_type"].default
    cpu, memory = DEFAULT_RESOURCES[model]
    launch = replace(timing, cold_start_s=async_launch_s)
    targets: list[Target] = [
        SageMakerRealtime(timing, instance_type),
        SageMakerAsync(launch, instance_type),
        SageMakerBatch(launch, instance_type),
        CloudRun(timing, int(cpu), memory_gib(memory)),
        CloudRun(timing, int(cpu), memory_gib(memory), billing="instance", name="cloudrun-instance"),
        CloudRunJob(timing, int(cpu), memory_gib(memory)),
    ]
    memory_mb = serverless_memory_for(model)
    if memory_mb:  # vit_h fits 6144 MB; a model that fits none has no serverless target
        targets.insert(1, SageMakerServerless(timing, memory_mb))
    if gpu_timing is not None:
        need = limits.CLOUD_RUN_GPU["nvidia-l4"]
        targets.append(CloudRun(gpu_timing, need["min_cpu"], need["min_memory_gib"], billing="instance",
                                gpu="nvidia-l4", zonal_redundancy=False, name="cloudrun-l4"))
    return targets
