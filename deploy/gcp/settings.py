"""``segany deploy gcp`` settings: flags over the ``[gcp]`` table of the config file, checked here
before any call, each rule citing Cloud Run's docs (the numbers: deploy/limits.py)."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deploy import limits

# CPU and memory a model's server needs by default: the measured peak RSS plus headroom
# (deploy/limits.py MODEL_PEAK_MB), and vCPUs for the compute-bound encoder.
DEFAULT_RESOURCES = {"tiny": ("1", "1Gi"), "vit_b": ("2", "2Gi"), "vit_l": ("4", "4Gi"), "vit_h": ("4", "6Gi")}
# Concurrency per instance: the image encoder is compute-bound (one image takes every core for
# seconds), so requests beyond a couple per instance only queue inside it and run into the
# request timeout; Cloud Run adds an instance instead. Prompts on a cached embedding are fast,
# which is why it is not 1.
DEFAULT_CONCURRENCY = {"cpu": 2, "gpu": 4}


def memory_gib(value: str) -> float:
    """Cloud Run's memory notation (``512Mi``, ``8Gi``, ``4G``) in GiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", value)
    if not match:
        raise ValueError(f"memory {value!r}: write it as Cloud Run does, e.g. 4Gi or 512Mi")
    number, unit = float(match.group(1)), match.group(2)
    return number * {"Mi": 1 / 1024, "Gi": 1, "M": 1e6 / 2**30, "G": 1e9 / 2**30}[unit]


class GcpSettings(BaseModel):
    """Every key of the ``[gcp]`` table; the flag of each is ``--`` and the key with dashes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    region: str
    service: str = "segment-anywhere"  # the service (or, with job, the job)'s name
    image: str | None = None  # an image already in a registry Cloud Run pulls from
    oci_archive: str | None = None  # or the image from segany build, pushed to Artifact Registry
    local_image: str | None = None
    repository: str = "segment-anywhere"  # Artifact Registry repository (REGION-docker.pkg.dev/PROJECT/REPOSITORY)
    create_repository: bool = False  # create it (a Docker repository in the region) when it is missing
    registry: str | None = None  # push here instead (a mirror; tests)
    model: Literal["tiny", "vit_b", "vit_l", "vit_h"] | None = None
    checkpoint: str | None = None  # gs:// weights when not baked (SEGANY_CHECKPOINT)
    env: dict[str, str] = Field(default_factory=dict)
    cpu: str | None = None  # "1", "2", "4", "6", "8"; default by model
    memory: str | None = None  # "4Gi"; default by model
    gpu: Literal["nvidia-l4"] | None = None
    gpu_zonal_redundancy: bool = True
    cpu_always_allocated: bool = False  # instance-based billing; GPU forces it
    startup_cpu_boost: bool = True
    min_instances: int = 0  # scale to zero
    max_instances: int = 3
    concurrency: int | None = None  # default by device (see DEFAULT_CONCURRENCY)
    timeout_s: int = 900
    service_account: str | None = None
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] = "all"
    session_affinity: bool = True
    invoker: tuple[str, ...] = ()  # members granted roles/run.invoker, e.g. user:me@example.com
    allow_unauthenticated: bool = False
    no_traffic: bool = False
    # Cloud Run jobs (batch)
    job: bool = False
    input: str | None = None
    output: str | None = None
    tasks: int = 1
    parallelism: int = 0  # 0: as many as Cloud Run allows
    task_timeout_s: int = 3600
    max_retries: int = 1
    task: Literal["everything", "segment", "embed"] = "everything"
    poll_s: float = 5

    @field_validator("service")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(limits.CLOUD_RUN_SERVICE_NAME, value):
            raise ValueError("lowercase letters, digits and hyphens, starting with a letter, at most 49 characters "
                             "(cloud.google.com/run/docs/resource-model)")
        return value

    @field_validator("input", "output")
    @classmethod
    def _gs(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(gs|s3)://[a-z0-9][a-z0-9._\-]{1,220}(/.*)?$", value):
            raise ValueError("a gs://bucket/prefix URI")
        return value.rstrip("/") if value else value

    @field_validator("invoker")
    @classmethod
    def _members(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in value if not re.match(r"^(user|serviceAccount|group|domain):.+$", m)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: IAM members are user:EMAIL, serviceAccount:EMAIL, group:EMAIL or domain:NAME")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "GcpSettings":
        problems = [p for p in (self._sources(), self._resources(), self._scaling(), self._job()) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _sources(self) -> str | None:
        given = [n for n in ("image", "oci_archive", "local_image") if getattr(self, n)]
        if len(given) != 1:
            return ("give the image: --image REF (in a registry Cloud Run pulls from), --oci-archive FILE or "
                    "--local-image REF (from segany build)" if not given else f"give one image source, not {' and '.join(given)}")
        if self.checkpoint and not self.checkpoint.startswith(("gs://", "https://")):
            return "--checkpoint: a gs:// or https:// URI the service can read (or bake the weights: segany build --bake-weights)"
        return None

    @property
    def model_or_default(self) -> str:
        return self.model or "vit_h"

    @property
    def resolved_cpu(self) -> str:
        if self.cpu:
            return self.cpu
        cpu = DEFAULT_RESOURCES[self.model_or_default][0]
        return str(max(int(cpu), limits.CLOUD_RUN_GPU[self.gpu]["min_cpu"])) if self.gpu else cpu

    @property
    def resolved_memory(self) -> str:
        if self.memory:
            return self.memory
        memory = DEFAULT_RESOURCES[self.model_or_default][1]
        if self.gpu:
            return f"{max(int(memory_gib(memory)), limits.CLOUD_RUN_GPU[self.gpu]['min_memory_gib'])}Gi"
        cpus = int(self.resolved_cpu)
        fitting = max((gib for gib, need in limits.CLOUD_RUN_MEMORY_CPU if cpus < need), default=None)
        return memory if fitting is None or memory_gib(memory) <= fitting else f"{fitting}Gi"

    @property
    def resolved_concurrency(self) -> int:
        return self.concurrency or DEFAULT_CONCURRENCY["gpu" if self.gpu else "cpu"]

    @property
    def cpu_idle(self) -> bool:
        """CPU only during requests (request-based billing), unless always allocated or a GPU."""
        return not (self.cpu_always_allocated or self.gpu)

    def _resources(self) -> str | None:
        cpu = self.resolved_cpu
        if cpu not in tuple(map(str, limits.CLOUD_RUN_CPUS)):
            return f"--cpu {cpu}: one of {', '.join(map(str, limits.CLOUD_RUN_CPUS))} (cloud.google.com/run/docs/configuring/services/cpu)"
        try:
            gib = memory_gib(self.resolved_memory)
        except ValueError as exc:
            return f"--memory: {exc}"
        if gib > limits.CLOUD_RUN_MAX_MEMORY_GIB:
            return f"--memory {self.resolved_memory}: at most {limits.CLOUD_RUN_MAX_MEMORY_GIB}Gi (memory-limits)"
        for over, need in limits.CLOUD_RUN_MEMORY_CPU:
            if gib > over and int(cpu) < need:
                return (f"--memory {self.resolved_memory} needs at least {need} vCPU (memory over {over} GiB; "
                        f"cloud.google.com/run/docs/configuring/services/memory-limits): give --cpu {need}")
        need_mb = limits.MODEL_PEAK_MB[self.model_or_default] * limits.MEMORY_HEADROOM
        if gib * 1024 < need_mb:
            return (f"--memory {self.resolved_memory} is too small for {self.model_or_default} (its server peaks at "
                    f"{limits.MODEL_PEAK_MB[self.model_or_default]} MB): give --memory {math.ceil(need_mb / 1024)}Gi or more")
        if self.gpu:
            floor = limits.CLOUD_RUN_GPU[self.gpu]
            if int(cpu) < floor["min_cpu"] or gib < floor["min_memory_gib"]:
                return (f"--gpu {self.gpu} needs at least {floor['min_cpu']} vCPU and {floor['min_memory_gib']}Gi "
                        "(cloud.google.com/run/docs/configuring/services/gpu)")
        return None

    def _scaling(self) -> str | None:
        if not 0 <= self.min_instances <= self.max_instances or self.max_instances < 1:
            return f"--min-instances {self.min_instances} / --max-instances {self.max_instances}: 0 <= min <= max, max >= 1"
        if self.max_instances > limits.CLOUD_RUN_MAX_INSTANCES:
            return f"--max-instances: at most {limits.CLOUD_RUN_MAX_INSTANCES} (cloud.google.com/run/quotas)"
        low, high = limits.CLOUD_RUN_CONCURRENCY
        if not low <= self.resolved_concurrency <= high:
            return f"--concurrency {self.resolved_concurrency}: {low}-{high} (cloud.google.com/run/docs/about-concurrency)"
        low, high = limits.CLOUD_RUN_TIMEOUT_S
        if not low <= self.timeout_s <= high:
            return f"--timeout-s {self.timeout_s}: {low}-{high} (cloud.google.com/run/docs/configuring/request-timeout)"
        if self.allow_unauthenticated and self.invoker:
            return "--allow-unauthenticated makes the service public; --invoker then grants nothing more: give one"
        return None

    def _job(self) -> str | None:
        if not self.job:
            return None
        if not (self.input and self.output):
            return "--job needs --input gs://bucket/photos and --output gs://bucket/masks"
        low, high = limits.CLOUD_RUN_JOB_TASKS
        if not low <= self.tasks <= high:
            return f"--tasks {self.tasks}: {low}-{high} (cloud.google.com/run/quotas)"
        if not 1 <= self.task_timeout_s <= limits.CLOUD_RUN_JOB_TASK_TIMEOUT_S:
            return f"--task-timeout-s: 1-{limits.CLOUD_RUN_JOB_TASK_TIMEOUT_S} (168 hours; cloud.google.com/run/docs/configuring/task-timeout)"
        low, high = limits.CLOUD_RUN_JOB_RETRIES
        if not low <= self.max_retries <= high:
            return f"--max-retries {self.max_retries}: {low}-{high} (cloud.google.com/run/docs/configuring/max-retries)"
        return None
