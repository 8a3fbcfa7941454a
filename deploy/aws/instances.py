"""SageMaker instance types this project knows: size, accelerator and an on-demand price.

Kept as data, each price with where and when it was read, for the deploy's cost line (and for
``segany compare`` later). Prices are us-east-1 real-time inference on-demand rates; AWS's own
page renders them client-side, so they were read from third-party copies of it, which disagree by
10-15% (../shared/PLATFORMS.md): treat them as estimates and check the pricing page.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_SOURCE = "https://aws.amazon.com/sagemaker/pricing/ (us-east-1, on-demand, read 2026-12 via third-party tables)"
# Serverless: per GB-second of the memory configured, x86, us-east-1 (same source and date),
# plus a per-GB charge for data in and out.
SERVERLESS_GB_SECOND_USD = 0.0000200
SERVERLESS_DATA_GB_USD = 0.016


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    gpu: str | None  # the accelerator, None for CPU-only
    usd_per_hour: float


_TABLE = [
    ("ml.t2.medium", 2, 4, None, 0.056),
    ("ml.t2.large", 2, 8, None, 0.111),
    ("ml.m5.large", 2, 8, None, 0.115),
    ("ml.m5.xlarge", 4, 16, None, 0.23),
    ("ml.m5.2xlarge", 8, 32, None, 0.461),
    ("ml.m5.4xlarge", 16, 64, None, 0.922),
    ("ml.c5.xlarge", 4, 8, None, 0.204),
    ("ml.c5.2xlarge", 8, 16, None, 0.408),
    ("ml.c5.4xlarge", 16, 32, None, 0.816),
    ("ml.c5.9xlarge", 36, 72, None, 1.836),
    ("ml.r5.large", 2, 16, None, 0.151),
    ("ml.r5.xlarge", 4, 32, None, 0.302),
    ("ml.g4dn.xlarge", 4, 16, "NVIDIA T4", 0.736),
    ("ml.g4dn.2xlarge", 8, 32, "NVIDIA T4", 0.94),
    ("ml.g5.xlarge", 4, 16, "NVIDIA A10G", 1.408),
    ("ml.g5.2xlarge", 8, 32, "NVIDIA A10G", 1.515),
    ("ml.p3.2xlarge", 8, 61, "NVIDIA V100", 3.825),
]
INSTANCE_TYPES = {name: InstanceType(name, cpus, mem, gpu, price) for name, cpus, mem, gpu, price in _TABLE}


def instance_type(name: str) -> InstanceType | None:
    return INSTANCE_TYPES.get(name)
