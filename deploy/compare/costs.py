"""The monthly cost of a traffic profile on each target, with the formula next to each figure,
and the requests per day where one target becomes cheaper than another.

Every target is a frozen settings object holding its own measured seconds per request kind
(:class:`~deploy.compare.timing.Timing`: the compare runner measures them; ``bench_timing``
gives the figures in ``bench/results``). The model, assumption by assumption, is in docs/compare.md ("Cost model").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable

from deploy.compare.prices import PriceTable, table_prices
from deploy.compare.targets import (CloudRun, CloudRunJob, SageMakerAsync, SageMakerBatch, SageMakerRealtime,  # noqa: F401
                                    SageMakerServerless, Target, default_targets)
from deploy.compare.timing import Timing, bench_timing  # noqa: F401 (re-exported)
from deploy.compare.workload import Demand

HOURS_PER_MONTH = 730  # both clouds' calculators
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
DAY_S = 86400


@dataclass(frozen=True)
class CostLine:
    label: str
    usd: float
    formula: str


@dataclass(frozen=True)
class Cost:
    target: str
    usd_month: float
    lines: tuple[CostLine, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def formula(self) -> str:
        return "\n".join(f"{line.label}: {line.formula} = ${line.usd:,.2f}" for line in self.lines)


def _line(label: str, usd: float, formula: str) -> CostLine:
    return CostLine(label, usd, formula)


# --- the shared pieces ---------------------------------------------------------------------------
def alive_seconds_per_day(demand: Demand, timing: Timing, idle_s: float) -> tuple[float, float, str]:
    """(seconds an instance lives per day, cold starts per day, how) for a target that scales to
    zero after ``idle_s`` idle seconds. A burst lasts n*s + (n-1)*think; a gap longer than idle_s
    ends the instance (each burst pays cold start + burst + idle tail), a shorter one keeps it
    alive from the day's first burst to its last."""
    p = demand.profile
    s, c, bursts = timing.mean(demand), timing.cold_start_s, p.bursts_per_day
    burst = p.burst_size * s + (p.burst_size - 1) * p.think_time_s
    if p.idle_gap_s > idle_s or bursts <= 1:
        alive, starts = bursts * (c + burst + idle_s), bursts
        how = f"{bursts:g} bursts x ({c:g} s start + {burst:g} s burst + {idle_s:g} s idle)"
    else:
        alive, starts = c + bursts * burst + (bursts - 1) * p.idle_gap_s + idle_s, 1.0
        how = (f"{c:g} s start + {bursts:g} x {burst:g} s bursts + {bursts - 1:g} x {p.idle_gap_s:g} s gaps "
               f"+ {idle_s:g} s idle")
    busy = p.requests_per_day * s
    if busy > DAY_S:  # one request per instance at a time: more work than a day holds needs more instances
        return busy, 0.0, f"{busy:,.1f} s busy > 86400 s: several instances always on"
    if alive >= DAY_S:
        return DAY_S, 0.0, f"always on: {how} >= 86400 s"
    return alive, starts, how


def _data(demand: Demand, prices: PriceTable) -> CostLine:
    gb = (demand.mean_bytes_in() + demand.mean_bytes_out()) / 1e9
    n = demand.profile.requests_per_day * DAYS_PER_MONTH
    rate = prices.usd("sagemaker.data_gb")
    return _line("data in+out", n * gb * rate, f"{n:,.1f} requests x {gb:.6f} GB x ${rate}/GB")


def _instance_hours(label: str, hours: float, itype: str, prices: PriceTable, key: str = "hosting") -> CostLine:
    rate = prices.usd(f"sagemaker.{key}_hour.{itype}")
    return _line(label, hours * rate, f"{hours:,.2f} h x ${rate}/h ({itype})")


# --- per target ------------------------------------------------------------------------------------
def _realtime(t: SageMakerRealtime, d: Demand, prices: PriceTable) -> Cost:
    hours = t.instance_count * HOURS_PER_MONTH
    lines = (_instance_hours(f"{t.instance_count} instance(s) x 730 h, billed while idle", hours, t.instance_type, prices),
             _data(d, prices))
    busy = d.profile.requests_per_day * t.timing.mean(d)
    notes = ((f"over capacity: {busy:,.0f} busy s a day needs {math.ceil(busy / DAY_S)} instance(s), "
              f"{t.instance_count} configured",) if busy > t.instance_count * DAY_S else ())
    return Cost(t.name, sum(x.usd for x in lines), lines, notes)


def _serverless(t: SageMakerServerless, d: Demand, prices: PriceTable) -> Cost:
    s = t.timing.mean(d)
    seconds = d.profile.requests_per_day * DAYS_PER_MONTH * s
    free = prices.usd("sagemaker.serverless.free_seconds") if t.free_tier else 0
    billable = max(seconds - free, 0.0)
    gb, rate = t.memory_mb / 1024, prices.usd("sagemaker.serverless.gb_second")
    compute = _line("compute", billable * gb * rate,
                    f"max({d.profile.requests_per_day:g}/day x {DAYS_PER_MONTH:.4f} days x {s:.4f} s - {free:g} free s, 0)"
                    f" x {gb:g} GB x ${rate}/GB-s")
    lines = (compute, _data(d, prices))
    return Cost(t.name, sum(x.usd for x in lines), lines, ("cold starts are not billed; requests over 4 MB fail",))


def _async(t: SageMakerAsync, d: Demand, prices: PriceTable) -> Cost:
    if t.min_instances > 0:
        alive = max(t.min_instances * DAY_S, d.profile.requests_per_day * t.timing.mean(d))
        how = f"{t.min_instances} instance(s) kept: {alive:,.1f} s"
    else:
        alive, _, how = alive_seconds_per_day(d, t.timing, t.idle_scale_down_s)
    hours = alive * DAYS_PER_MONTH / 3600
    inst = _instance_hours(f"instance time ({how} per day)", hours, t.instance_type, prices)
    n = d.profile.requests_per_day * DAYS_PER_MONTH
    put, get = prices.usd("s3.put_per_1000"), prices.usd("s3.get_per_1000")
    s3_requests = _line("S3 requests", n * (2 * put + get) / 1000,
                        f"{n:,.1f} requests x (2 PUT x ${put} + 1 GET x ${get}) / 1000")
    stored_gb = d.profile.requests_per_day * t.retention_days * (d.mean_bytes_in() + d.mean_bytes_out()) / 1e9
    storage_rate = prices.usd("s3.storage_gb_month")
    storage = _line("S3 storage", stored_gb * storage_rate,
                    f"{d.profile.requests_per_day:g}/day x {t.retention_days:g} days kept x "
                    f"{(d.mean_bytes_in() + d.mean_bytes_out()) / 1e9:.6f} GB x ${storage_rate}/GB-month")
    lines = (inst, _data(d, prices), s3_requests, storage)
    return Cost(t.name, sum(x.usd for x in lines), lines, ("answers arrive in S3, not in the response",))


def _batch(t: SageMakerBatch, d: Demand, prices: PriceTable) -> Cost:
    busy = d.profile.requests_per_day * t.timing.mean(d)
    per_day = t.jobs_per_day * t.instance_count * t.timing.cold_start_s + busy
    hours = per_day * DAYS_PER_MONTH / 3600
    line = _instance_hours(
        f"jobs ({t.jobs_per_day:g}/day x {t.instance_count} instance(s) x {t.timing.cold_start_s:g} s start"
        f" + {busy:,.1f} s work per day)", hours, t.instance_type, prices, key="batch")
    return Cost(t.name, line.usd, (line,), ("no interactive answers: results arrive when the job ends",))


def _cloudrun(t: CloudRun, d: Demand, prices: PriceTable) -> Cost:
    b = t.billing
    vcpu, gib = prices.usd(f"cloudrun.{b}.vcpu_second"), prices.usd(f"cloudrun.{b}.gib_second")
    busy = d.profile.requests_per_day * t.timing.mean(d)
    notes: list[str] = []
    if b == "request":
        if t.min_instances > 0:
            starts, how = 0.0, f"{busy:,.1f} s busy per day (min instances: no cold start)"
        else:
            _, starts, _ = alive_seconds_per_day(d, t.timing, t.idle_scale_down_s)
            how = f"{busy:,.1f} s busy + {starts:g} cold starts x {t.timing.cold_start_s:g} s per day"
        billed = (busy + starts * t.timing.cold_start_s) * DAYS_PER_MONTH
    else:
        if t.min_instances > 0:
            alive = max(t.min_instances * DAY_S, busy)
            how = f"{t.min_instances} instance(s) kept: {alive:,.1f} s per day"
        else:
            alive, _, how = alive_seconds_per_day(d, t.timing, t.idle_scale_down_s)
            how += " per day"
        billed = alive * DAYS_PER_MONTH
    free_v = prices.usd(f"cloudrun.{b}.free_vcpu_seconds") if t.free_tier else 0
    free_g = prices.usd(f"cloudrun.{b}.free_gib_seconds") if t.free_tier else 0
    lines = [
        _line(f"vCPU ({how})", max(t.cpu * billed - free_v, 0) * vcpu,
              f"max({t.cpu} vCPU x {billed:,.1f} s - {free_v:,.0f} free, 0) x ${vcpu}/vCPU-s"),
        _line("memory", max(t.memory_gib * billed - free_g, 0) * gib,
              f"max({t.memory_gib:g} GiB x {billed:,.1f} s - {free_g:,.0f} free, 0) x ${gib}/GiB-s"),
    ]
    if b == "request":
        n = d.profile.requests_per_day * DAYS_PER_MONTH
        free_r = prices.usd("cloudrun.request.free_requests") if t.free_tier else 0
        rate = prices.usd("cloudrun.request.million_requests")
        lines.append(_line("requests", max(n - free_r, 0) / 1e6 * rate,
                           f"max({n:,.1f} - {free_r:,.0f} free, 0) / 1e6 x ${rate}/million"))
        if t.min_instances > 0:  # idle min instances: billed at the instance-based rates (assumption)
            iv, ig = prices.usd("cloudrun.instance.vcpu_second"), prices.usd("cloudrun.instance.gib_second")
            idle = max(t.min_instances * DAY_S - busy, 0) * DAYS_PER_MONTH
            lines.append(_line("idle min instances", idle * (t.cpu * iv + t.memory_gib * ig),
                               f"{idle:,.1f} idle s x ({t.cpu} x ${iv} + {t.memory_gib:g} x ${ig})"))
            notes.append("idle min instances priced at the instance-based rates (an assumption, see docs/compare.md)")
    if t.gpu:
        key = f"cloudrun.gpu_second.{t.gpu}.{'zonal' if t.zonal_redundancy else 'nonzonal'}"
        rate = prices.usd(key)
        lines.append(_line(f"GPU {t.gpu}", billed * rate, f"{billed:,.1f} s x ${rate}/s (no free tier)"))
    return Cost(f"{t.name}", sum(x.usd for x in lines), tuple(lines), tuple(notes))


def _cloudrun_job(t: CloudRunJob, d: Demand, prices: PriceTable) -> Cost:
    """Each task is billed while it runs, at the instance-based rates (cloud.google.com/run/pricing: jobs)."""
    busy = d.profile.requests_per_day * t.timing.mean(d)
    billed = (t.tasks_per_day * t.timing.cold_start_s + busy) * DAYS_PER_MONTH
    how = f"{t.tasks_per_day:g} tasks x {t.timing.cold_start_s:g} s start + {busy:,.1f} s work per day"
    vcpu, gib = prices.usd("cloudrun.instance.vcpu_second"), prices.usd("cloudrun.instance.gib_second")
    free_v = prices.usd("cloudrun.instance.free_vcpu_seconds") if t.free_tier else 0
    free_g = prices.usd("cloudrun.instance.free_gib_seconds") if t.free_tier else 0
    lines = (
        _line(f"vCPU ({how})", max(t.cpu * billed - free_v, 0) * vcpu,
              f"max({t.cpu} vCPU x {billed:,.1f} s - {free_v:,.0f} free, 0) x ${vcpu}/vCPU-s"),
        _line("memory", max(t.memory_gib * billed - free_g, 0) * gib,
              f"max({t.memory_gib:g} GiB x {billed:,.1f} s - {free_g:,.0f} free, 0) x ${gib}/GiB-s"),
    )
    return Cost(t.name, sum(x.usd for x in lines), lines, ("no interactive answers: results arrive when the task ends",))


_MODELS = {SageMakerRealtime: _realtime, SageMakerServerless: _serverless, SageMakerAsync: _async,
           SageMakerBatch: _batch, CloudRun: _cloudrun, CloudRunJob: _cloudrun_job}


def monthly_cost(target: Target, demand: Demand, prices: PriceTable | None = None) -> Cost:
    """The cost of ``demand`` on ``target`` over one month (730 hours), with each line's formula."""
    return _MODELS[type(target)](target, demand, prices or table_prices())


def monthly_costs(targets: Iterable[Target], demand: Demand, prices: PriceTable | None = None) -> dict[str, Cost]:
    prices = prices or table_prices()
    return {t.name: monthly_cost(t, demand, prices) for t in targets}


# --- break-even -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BreakEven:
    requests_per_day: float
    cheaper_below: str  # the target that costs less under this many requests a day
    cheaper_above: str


def break_even(targets: Iterable[Target], demand: Demand, profile_range: tuple[float, float],
               prices: PriceTable | None = None, points: int = 400) -> list[BreakEven]:
    """Every requests-per-day in ``profile_range`` where two targets' monthly costs cross (the rest
    of the profile held), found on a log grid and refined by bisection; sorted by requests per day."""
    prices = prices or table_prices()
    targets = list(targets)
    lo, hi = profile_range
    if not 0 < lo < hi:
        raise ValueError("profile_range: 0 < low < high requests per day")
    grid = [lo * (hi / lo) ** (i / (points - 1)) for i in range(points)]

    def diff(a: Target, b: Target, r: float) -> float:
        dr = demand.with_requests_per_day(r)
        return monthly_cost(a, dr, prices).usd_month - monthly_cost(b, dr, prices).usd_month

    found = []
    for i, a in enumerate(targets):
        for b in targets[i + 1:]:
            values = [diff(a, b, r) for r in grid]
            for r0, r1, v0, v1 in zip(grid, grid[1:], values, values[1:]):
                if v0 == 0 or (v0 < 0) == (v1 < 0):
                    continue
                x0, x1 = r0, r1
                for _ in range(100):
                    mid = (x0 + x1) / 2
                    if (diff(a, b, mid) < 0) == (v0 < 0):
                        x0 = mid
                    else:
                        x1 = mid
                    if x1 - x0 <= 1e-9 * x1:
                        break
                below, above = (a, b) if v0 < 0 else (b, a)
                found.append(BreakEven((x0 + x1) / 2, below.name, above.name))
    return sorted(found, key=lambda e: e.requests_per_day)


def with_timing(target: Target, timing: Timing) -> Target:
    return replace(target, timing=timing)
