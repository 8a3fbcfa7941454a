"""Cloud Run prices for the deploy's cost line (and ``segany compare`` later), kept as data with
where and when each was read. Tier 1 regions; check cloud.google.com/run/pricing before relying
on them."""

from __future__ import annotations

from typing import Any

from deploy.gcp.settings import memory_gib

SOURCE = "https://cloud.google.com/run/pricing (tier 1, read 2026-12)"
REQUEST_BASED = {"vcpu_second": 0.000024, "gib_second": 0.0000025, "million_requests": 0.40}
INSTANCE_BASED = {"vcpu_second": 0.000018, "gib_second": 0.000002}
FREE_MONTHLY = {"vcpu_seconds": 180_000, "gib_seconds": 360_000, "requests": 2_000_000}
# L4 per second, us-central1 (a third-party reading of the Cloud Billing catalogue, 2026-12)
GPU_SECOND = {("nvidia-l4", True): 0.0002909, ("nvidia-l4", False): 0.0001867}


def hourly(s: Any) -> tuple[float, str]:
    """(USD per hour of one instance, the billing model's name)."""
    cpus, gib = int(s.resolved_cpu), memory_gib(s.resolved_memory)
    rates = REQUEST_BASED if s.cpu_idle else INSTANCE_BASED
    per_second = cpus * rates["vcpu_second"] + gib * rates["gib_second"]
    if s.gpu:
        per_second += GPU_SECOND[(s.gpu, s.gpu_zonal_redundancy)]
    return per_second * 3600, ("request-based: billed while requests run" if s.cpu_idle else "instance-based: billed while an instance lives")


def cost_text(s: Any) -> str:
    per_hour, model = hourly(s)
    idle = (f"nothing while scaled to zero" if s.min_instances == 0
            else f"{s.min_instances} instance(s) kept warm: from ${per_hour * s.min_instances:.3f} per hour even when idle")
    requests = f" + ${REQUEST_BASED['million_requests']:.2f} per million requests" if s.cpu_idle else ""
    return (f"cost: ${per_hour:.3f} per instance-hour ({s.resolved_cpu} vCPU, {s.resolved_memory}"
            f"{', ' + s.gpu if s.gpu else ''}; {model}){requests}; {idle}; monthly free tier "
            f"{FREE_MONTHLY['vcpu_seconds']:,} vCPU-s, {FREE_MONTHLY['gib_seconds']:,} GiB-s. Source: {SOURCE}")
