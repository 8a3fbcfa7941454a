"""Every platform limit the project relies on, with where it is documented.

Used by the in-container contracts (response-size guard), by image checks before a
deploy, and by the emulators and ``segany compare`` later; one table, so the numbers
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GB = 1000**3


@dataclass(frozen=True)
class PlatformLimits:
    """What one deployment target accepts. None means no limit that matters here."""

    name: str
    request_bytes: int | None
    response_bytes: int | None
    timeout_s: float | None
    memory_mb: int | None
    image_bytes: int | None
    source: str
    note: str = ""


SAGEMAKER = {
    "realtime": PlatformLimits(
        "SageMaker real-time endpoint", 6 * MiB, 6 * MiB, 60, None, None,
        "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html",
        "InvokeEndpoint payloads are capped at 6 MB (6291456 bytes); the container must answer within 60 s.",
    ),
    "serverless": PlatformLimits(
        "SageMaker Serverless Inference", 4 * MiB, 4 * MiB, 60, 6144, 10 * GB,
        "https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html",
        "Request and response 4 MB, memory at most 6144 MB, image at most 10 GB, /ping within 3 minutes.",
    ),
    "async": PlatformLimits(
        "SageMaker Asynchronous Inference", 1024 * MiB, None, 3600, None, None,
        "https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html",
        "Input and output go through S3 (up to 1 GB); a request may run up to one hour.",
    ),
    "batch": PlatformLimits(
        "SageMaker Batch Transform", 100 * MiB, 100 * MiB, 3600, None, None,
        "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html",
        "MaxPayloadInMB is at most 100; InvocationsTimeoutInSeconds at most 3600.",
    ),
}

CLOUD_RUN = PlatformLimits(
    "Cloud Run service", 32 * MiB, 32 * MiB, 3600, 32 * 1024, None,
    "https://cloud.google.com/run/quotas",
    "HTTP/1 requests and non-streamed responses up to 32 MiB; timeout up to 60 minutes; no direct image size "
    "limit, but every cold start pulls the image, so smaller starts faster. SIGTERM gives 10 s before SIGKILL.",
)

CLOUD_RUN_SHUTDOWN_GRACE_S = 10
SAGEMAKER_PORT = 8080
CLOUD_RUN_DEFAULT_PORT = 8080


def sagemaker_mode(name: str) -> PlatformLimits:
    try:
        return SAGEMAKER[name]
    except KeyError:
        raise ValueError(f"unknown SageMaker mode {name!r}; choose one of {', '.join(SAGEMAKER)}") from None


# --- SageMaker settings' ranges (checked by deploy/aws/settings.py before any call) -----------
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariantServerlessConfig.html
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = (1, 200)  # ProvisionedConcurrency too, and at most MaxConcurrency
SERVERLESS_PING_DEADLINE_S = 180  # serverless-endpoints.html: the container must answer /ping within 3 minutes
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html
STARTUP_TIMEOUT_S = (60, 3600)  # ContainerStartupHealthCheckTimeoutInSeconds, ModelDataDownloadTimeoutInSeconds
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html
BATCH_MAX_PAYLOAD_MB = (0, 100)
BATCH_INVOCATION_TIMEOUT_S = (1, 3600)  # ModelClientConfig.InvocationsTimeoutInSeconds
BATCH_INVOCATION_RETRIES = (0, 3)  # ModelClientConfig.InvocationsMaxRetries (API_ModelClientConfig.html)
BATCH_DEFAULTS = {"MaxPayloadInMB": 6, "InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}  # when unset
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AsyncInferenceClientConfig.html
ASYNC_MAX_CONCURRENT_INVOCATIONS = (1, 1000)
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpoint.html (EndpointName)
SAGEMAKER_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
SAGEMAKER_NAME_MAX = 63

# --- What a model needs of its server (measured: bench/results/coldstart.json, 2026-12-03) -----
# Peak RSS of the default server (torch-free engine, one process) through start and a first
# request; vit_l was not measured and is interpolated by its weights (1.25 GB against vit_b's
# 0.37 and vit_h's 2.56).
MODEL_PEAK_MB = {"tiny": 560, "vit_b": 1140, "vit_l": 2400, "vit_h": 3650}
MEMORY_HEADROOM = 1.25  # the container's page cache, a segment-everything request's masks, the OS
# Converting a checkpoint to OpenVINO at start, 2 cores (README: vit_h about 7 minutes; tiny
# seconds; vit_b and vit_l scaled by their encoder's FLOPs). A baked image never converts.
CONVERSION_S = {"tiny": 15, "vit_b": 120, "vit_l": 270, "vit_h": 420}
# A checkpoint's download at start (S3 to the instance, ~100 MB/s) plus loading, with margin.
WEIGHTS_MB = {"tiny": 5, "vit_b": 375, "vit_l": 1250, "vit_h": 2560}

# --- Cloud Run settings' ranges (checked by deploy/gcp/settings.py before any call) ------------
# https://cloud.google.com/run/docs/configuring/services/memory-limits and .../services/cpu:
# memory over 4 / 8 / 16 / 24 GiB needs at least 2 / 4 / 6 / 8 vCPU; at most 32 GiB and 8 vCPU.
CLOUD_RUN_MEMORY_CPU = ((4, 2), (8, 4), (16, 6), (24, 8))  # (GiB over which, vCPU at least)
CLOUD_RUN_MAX_MEMORY_GIB = 32
CLOUD_RUN_CPUS = (1, 2, 4, 6, 8)  # whole vCPUs (fractions below 1 exist, too little for SAM)
CLOUD_RUN_TIMEOUT_S = (1, 3600)  # https://cloud.google.com/run/docs/configuring/request-timeout
CLOUD_RUN_CONCURRENCY = (1, 1000)  # https://cloud.google.com/run/docs/about-concurrency
CLOUD_RUN_MAX_INSTANCES = 1000  # per revision; quotas may lower it (https://cloud.google.com/run/quotas)
# https://cloud.google.com/run/docs/configuring/services/gpu: one NVIDIA L4 per instance, at least
# 4 vCPU and 16 GiB, instance-based billing (CPU always allocated).
CLOUD_RUN_GPU = {"nvidia-l4": {"min_cpu": 4, "min_memory_gib": 16}}
# https://cloud.google.com/run/docs/configuring/healthchecks: periodSeconds 1-240, timeoutSeconds at
# most periodSeconds; a startup probe may take up to 240 s x failureThreshold.
CLOUD_RUN_PROBE_PERIOD_S = (1, 240)
CLOUD_RUN_SERVICE_NAME = r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$"  # https://cloud.google.com/run/docs/resource-model (49 chars)
# https://cloud.google.com/run/docs/create-jobs, https://cloud.google.com/run/quotas
CLOUD_RUN_JOB_TASKS = (1, 10000)
CLOUD_RUN_JOB_TASK_TIMEOUT_S = 168 * 3600
CLOUD_RUN_JOB_RETRIES = (0, 10)
# when unset: .../configuring/task-timeout (10 minutes), .../configuring/max-retries (3)
CLOUD_RUN_JOB_DEFAULT_TIMEOUT_S = 600
CLOUD_RUN_JOB_DEFAULT_RETRIES = 3

# --- What the emulators (deploy/emulate/, `segany emulate`) enforce beyond the tables above -----
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html:
# CustomAttributes at most 1024 visible US-ASCII characters.
SAGEMAKER_CUSTOM_ATTRIBUTES_MAX = 1024
