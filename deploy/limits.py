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
