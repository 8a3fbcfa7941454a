"""``segany compare``'s output: report.md (the side-by-side table, costs with their formulas,
break-even points, a recommendation and where the measurements disagree with the seed article),
report.json, and PNG charts (matplotlib, Agg).

The costs reuse ``deploy.compare.costs``: each target's :class:`~deploy.compare.timing.Timing` is
the run's median seconds per request kind and its measured cold start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from deploy.compare.runner import CAUSES, Run, TargetRun, median, percentile
from deploy.compare.workload import KINDS, Workload, over_request_caps

GPU = {
    "sagemaker-realtime": "yes (ml.g4dn/g5/g6 instances)",
    "sagemaker-serverless": "no (CPU only)",
    "sagemaker-async": "yes (the same instances as real-time)",
    "cloudrun": "yes (NVIDIA L4, instance-based billing)",
    "sagemaker-batch": "yes (the same instances as real-time)",
    "cloudrun-job": "yes (NVIDIA L4)",
}
NOT_IN_THE_RESPONSE = ("sagemaker-async", "sagemaker-batch", "cloudrun-job")
MEMORY = {
    "sagemaker-batch": "the instance's (ml.m5.xlarge: 16 GiB)",
    "sagemaker-realtime": "the instance's (ml.m5.xlarge: 16 GiB)",
    "sagemaker-async": "the instance's (ml.m5.xlarge: 16 GiB)",
}
RANGE = (1.0, 100_000.0)  # requests per day for break-even and the cost chart
ASYNC_LAUNCH_S = 300  # an async instance's launch from zero, as in docs/compare.md (not measured locally)


def _mb(n: int | None) -> str:
    return "none (S3)" if n is None else f"{n:,} B ({n / 2**20:g} MiB)"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def _latencies(t: TargetRun, kind: str | None = None) -> list[float]:
    return [r.latency_s for r in t.records if r.ok and (kind is None or r.kind == kind)]


def _warm(t: TargetRun, kind: str) -> list[float]:
    """The seconds a successful request keeps an instance busy: its latency less the cold start it paid."""
    return [max(r.latency_s - (r.cold_start_s or 0.0), 0.0) for r in t.records if r.ok and r.kind == kind]


def measured_timing(run: Run) -> dict[str, Any]:
    """{target: Timing} from the run: median warm seconds per kind (a kind with no warm success on a
    target takes the median of the other targets, with a note), cold start = median measured start."""
    from deploy.compare.timing import Timing

    pooled = {k: [x for t in run.targets for x in _warm(t, k)] for k in KINDS}
    out = {}
    for t in run.targets:
        seconds, borrowed = {}, []
        for k in KINDS:
            mine = _warm(t, k)
            if mine:
                seconds[k] = median(mine)
            else:
                seconds[k] = median(pooled[k]) or 0.0
                borrowed.append(k)
        starts = [c["seconds"] for c in t.cold_starts]
        note = f"measured ({run.model}, {run.machine})" + (f"; {', '.join(borrowed)} from the other targets" if borrowed else "")
        out[t.target] = Timing(seconds["point"], seconds["point_cached"], seconds["everything"], median(starts) or 0.0, note)
    return out


def cost_targets(run: Run, timings: dict[str, Any], model: str, requests_per_day: float = 1) -> list[Any]:
    """The costs module's targets for the compared ones, with ``segany deploy``'s settings for ``model``;
    a job target runs one job per request, as the run did."""
    from deploy.compare.targets import default_targets

    any_timing = next(iter(timings.values()))
    defaults = {t.name: t for t in default_targets(model, any_timing, async_launch_s=ASYNC_LAUNCH_S)}
    out = []
    for t in run.targets:
        base = defaults.get(t.platform)
        if base is None:
            continue
        timing = timings[t.target]
        if t.platform == "sagemaker-async":
            timing = replace(timing, cold_start_s=ASYNC_LAUNCH_S)
        if t.platform == "sagemaker-batch":
            base = replace(base, jobs_per_day=requests_per_day)
        if t.platform == "cloudrun-job":
            base = replace(base, tasks_per_day=requests_per_day)
        out.append(replace(base, timing=timing, name=t.target))
    return out


def analyse(run: Run, workload: Workload, prices: Any = None) -> dict[str, Any]:
    """Everything the report shows, as plain data (report.json holds it with the run)."""
    from deploy.compare.costs import break_even, monthly_costs
    from deploy.compare.prices import table_prices

    prices = prices or table_prices()
    from deploy.compare.timing import bench_timing

    demand = workload.demand(run.images)
    timings = measured_timing(run)
    targets = cost_targets(run, timings, run.model, demand.profile.requests_per_day)
    costs = monthly_costs(targets, demand, prices)
    crossings = break_even(targets, demand, RANGE, prices) if len(targets) > 1 else []
    bench: dict[str, Any] = {}
    if workload.model != run.model:
        try:
            bt = bench_timing(workload.model)
            bench_targets = cost_targets(run, {t.target: bt for t in run.targets}, workload.model,
                                         demand.profile.requests_per_day)
            bench = {"model": workload.model, "timing": asdict(bt), "costs": monthly_costs(bench_targets, demand, prices),
                     "break_even": break_even(bench_targets, demand, RANGE, prices) if len(bench_targets) > 1 else []}
        except (ValueError, OSError, KeyError) as exc:
            bench = {"model": workload.model, "error": str(exc)}
    per_target = {}
    for t in run.targets:
        failures = {c: sum(1 for r in t.records if not r.ok and r.cause == c) for c in CAUSES}
        workarounds: dict[str, int] = {}
        for r in t.records:
            if r.workaround:
                workarounds[r.workaround] = workarounds.get(r.workaround, 0) + 1
        latency = {k: {"n": len(_latencies(t, k)), "p50": percentile(_latencies(t, k), 0.5),
                       "p95": percentile(_latencies(t, k), 0.95), "p99": percentile(_latencies(t, k), 0.99)}
                   for k in KINDS}
        starts = [c["seconds"] for c in t.cold_starts]
        per_target[t.target] = {
            "requests": len(t.records), "ok": sum(r.ok for r in t.records), "failures": failures,
            "failed_requests": [asdict(r) for r in t.records if not r.ok], "workarounds": workarounds,
            "latency": latency, "cold_start_s": {"n": len(starts), "median": median(starts), "max": max(starts, default=None)},
            "first_response_s": t.first_response_s, "throughput_rps": t.throughput_rps,
            "timing": asdict(timings[t.target]),
            "cost": asdict(costs[t.target]) | {"formula": costs[t.target].formula} if t.target in costs else None,
        }
    return {"demand": {"requests_per_day": demand.profile.requests_per_day, "burst_size": demand.profile.burst_size,
                       "think_time_s": demand.profile.think_time_s, "idle_gap_s": demand.profile.idle_gap_s,
                       "mix": {k.name: k.share for k in demand.kinds}, "mean_image_bytes": demand.image_bytes},
            "over_request_caps": over_request_caps(run.images), "targets": per_target, "costs": costs,
            "break_even": crossings, "bench": bench, "cost_objects": targets, "demand_object": demand,
            "recommendation": recommend(run, per_target, costs),
            "prices": {"mode": prices.mode, "notes": list(prices.notes)}, "price_table": prices}


def recommend(run: Run, per_target: dict[str, Any], costs: dict[str, Any]) -> dict[str, Any]:
    """The target for this profile: fewest failures (skipped prompts count), then the lowest monthly
    cost, then the lowest p50 of the first prompt; the reasons name what the others lack."""
    def failed(name: str) -> int:
        return sum(per_target[name]["failures"].values())

    def cost(name: str) -> float:
        return costs[name].usd_month if name in costs else float("inf")

    def p50(name: str) -> float:
        return per_target[name]["latency"]["point"]["p50"] or float("inf")

    names = [t.target for t in run.targets]
    platform = {t.target: t.platform for t in run.targets}
    # async answers in S3, not in the response: the seed's sessions need the answer in the response
    interactive = [n for n in names if platform[n] not in NOT_IN_THE_RESPONSE] or names
    best = min(interactive, key=lambda n: (failed(n), cost(n), p50(n)))
    why = [f"{best}: {per_target[best]['ok']}/{per_target[best]['requests']} requests answered, "
           f"{_usd(cost(best))} a month for this profile, first-prompt p50 {_s(per_target[best]['latency']['point']['p50'])}"]
    for n in names:
        if n == best:
            continue
        reasons = []
        if platform[n] in ("sagemaker-batch", "cloudrun-job"):
            reasons.append("a job per request: each answer waits for a job to start, run and end")
        elif platform[n] == "sagemaker-async":
            reasons.append("answers arrive in S3, not in the response (the seed's sessions need them in the response)")
        if failed(n) > failed(best):
            causes = ", ".join(f"{v} {c}" for c, v in per_target[n]["failures"].items() if v)
            reasons.append(f"{failed(n)} failed ({causes})")
        if cost(n) > cost(best):
            reasons.append(f"costs {_usd(cost(n))} a month ({_usd(cost(n) - cost(best))} more)")
        if not reasons:
            reasons.append("as good on failures and cost; slower first prompt" if p50(n) >= p50(best) else "a close second")
        why.append(f"not {n}: " + "; ".join(reasons))
    return {"target": best, "why": why}


# --- charts --------------------------------------------------------------------------------------------
def charts(run: Run, analysis: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deploy.compare.costs import monthly_cost

    paths = []
    fig, axes = plt.subplots(1, len(KINDS), figsize=(4.2 * len(KINDS), 4), squeeze=False)
    names = [t.target for t in run.targets]
    for ax, kind in zip(axes[0], KINDS):
        data = [_latencies(t, kind) for t in run.targets]
        for i, values in enumerate(data, start=1):
            if values:
                ax.scatter([i] * len(values), values, s=12, alpha=0.6)
        if any(data):
            ax.boxplot([d if d else [float("nan")] for d in data], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), [n.replace("sagemaker-", "sm-") for n in names], rotation=20)
        ax.set_title(kind)
        ax.set_ylabel("latency (s)")
        ax.set_yscale("log")
    fig.suptitle(f"Latency per request kind ({run.model}, successful requests; dots = requests)")
    fig.tight_layout()
    path = out_dir / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    demand = analysis["demand_object"]
    grid = [RANGE[0] * (RANGE[1] / RANGE[0]) ** (i / 199) for i in range(200)]
    fig, ax = plt.subplots(figsize=(8, 5))
    for target in analysis["cost_objects"]:
        ax.plot(grid, [monthly_cost(target, demand.with_requests_per_day(r), analysis['price_table']).usd_month for r in grid], label=target.name)
    by_name = {t.name: t for t in analysis["cost_objects"]}
    for be in analysis["break_even"]:
        usd = monthly_cost(by_name[be.cheaper_below], demand.with_requests_per_day(be.requests_per_day), analysis['price_table']).usd_month
        ax.scatter([be.requests_per_day], [max(usd, 0.01)], marker="o", color="black", zorder=5)
        ax.annotate(f"{be.requests_per_day:,.0f}/day", (be.requests_per_day, max(usd, 0.01)), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.axvline(demand.profile.requests_per_day, linestyle="--", color="grey", label="this profile")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("requests per day (profile's burst, gaps and mix held)")
    ax.set_ylabel("USD per month")
    ax.set_title(f"Monthly cost against requests per day ({run.model}, measured seconds); dots: break-even")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


# --- the seed's claims, checked against the run ----------------------------------------------------------
def seed_checks(run: Run, analysis: dict[str, Any]) -> list[str]:
    from deploy.limits import SAGEMAKER

    t = analysis["targets"]
    lines = []
    big = {i: s for i, s in run.images.items() if s > SAGEMAKER["serverless"].request_bytes}
    if "sagemaker-serverless" in t and big:
        refused = {r["image"] for r in t["sagemaker-serverless"]["failed_requests"] if r["cause"] == "payload limit"}
        sent = {r.image for tr in run.targets if tr.target == "sagemaker-serverless" for r in tr.records
                if r.image in big and r.kind != "point_cached"}
        verdict = "agrees" if sent and sent <= refused else "DISAGREES"
        lines.append(f"Serverless refuses a request body over 4 MB (記事: 「リクエストボディが4MBの制限を超えてしまい」): {verdict}: "
                     f"{', '.join(sorted(refused & sent)) or 'none'} of {', '.join(sorted(sent)) or 'none'} refused. The cap is "
                     f"4 MiB ({SAGEMAKER['serverless'].request_bytes:,} bytes); in base64 JSON an image is refused from ~3 MiB, "
                     "as a raw body (prompts in CustomAttributes) up to the full 4 MiB: the article does not mention the raw body.")
    if "sagemaker-realtime" in t:
        mid = {i for i, s in run.images.items() if SAGEMAKER["serverless"].request_bytes < s <= SAGEMAKER["realtime"].request_bytes}
        ok = {r.image for tr in run.targets if tr.target == "sagemaker-realtime" for r in tr.records if r.ok and r.image in mid}
        if mid:
            lines.append(f"Real-time's 6 MB is \"insufficient for high-resolution images\" (「高解像度の画像...には不十分」): "
                         f"{'partly DISAGREES' if ok else 'agrees'}: {', '.join(sorted(ok)) or 'none'} (a 12-megapixel JPEG "
                         "between 4 and 6 MiB) passed as a raw body; only images over 6 MiB fail "
                         f"({', '.join(sorted(i for i, s in run.images.items() if s > SAGEMAKER['realtime'].request_bytes)) or 'none here'}).")
    if "sagemaker-async" in t:
        a = t["sagemaker-async"]
        lines.append(f"Async \"takes large images\" (「リクエストサイズの制限が大幅に緩和される」): "
                     f"{'agrees' if not a['failures']['payload limit'] else 'DISAGREES'}: {a['ok']}/{a['requests']} answered, "
                     f"{a['failures']['payload limit']} payload failures. Its table's \"使用量課金\" (billed by use) is only "
                     f"partly right: the instance is billed from launch ({ASYNC_LAUNCH_S} s assumed) to scale-in (900 s idle), "
                     f"{_usd(analysis['costs']['sagemaker-async'].usd_month) if 'sagemaker-async' in analysis['costs'] else '?'} "
                     "a month for this profile; and results come back through S3, which the seed's sessions cannot use.")
    if "sagemaker-realtime" in analysis["costs"]:
        rt = analysis["costs"]["sagemaker-realtime"].usd_month
        cheaper = [n for n, c in analysis["costs"].items() if c.usd_month < rt]
        lines.append(f"Real-time is billed around the clock (「常時課金」): agrees: {_usd(rt)} a month whatever the traffic; "
                     f"cheaper for this profile: {', '.join(cheaper) or 'none'}.")
    if "cloudrun" in t:
        c = t["cloudrun"]
        lines.append(f"Cloud Run scales to zero and is not billed while idle (「アクセスのない時間は課金なし」): agrees "
                     f"({_usd(analysis['costs']['cloudrun'].usd_month) if 'cloudrun' in analysis['costs'] else '?'} a month), "
                     f"but the article does not mention the price: every session after an idle gap paid a cold start here "
                     f"({c['cold_start_s']['n']} starts, median {_s(c['cold_start_s']['median'])}, the process only: the "
                     "image pull and instance start come on top in the cloud). "
                     f"{c['ok']}/{c['requests']} requests answered, every image included (32 MiB cap).")
    return lines


# --- report.md and report.json --------------------------------------------------------------------------
def _where_run(run: Run) -> str:
    emulated = [t.target for t in run.targets if not t.deployed]
    deployed = [t for t in run.targets if t.deployed]
    parts = []
    if emulated:
        parts.append(f"{', '.join(emulated)}: the local emulator (`segany emulate`) in front of the real server process, "
                     "so latencies are this machine's CPU, not the cloud's.")
    if deployed:
        parts.append("Deployed: " + "; ".join(f"{t.target} ({t.note})" for t in deployed) + ".")
    return " ".join(parts)


def _row(label: str, values: list[str]) -> str:
    return f"| {label} | " + " | ".join(values) + " |"


def markdown(run: Run, workload: Workload, analysis: dict[str, Any]) -> str:
    names = [t.target for t in run.targets]
    a = analysis["targets"]
    costs = analysis["costs"]
    d = analysis["demand"]
    lines = [f"# segany compare: {run.workload}", "",
             f"Model **{run.model}** on {run.machine}, run {run.started}; {run.requests_per_target} requests per target "
             f"(sessions of the workload's mix over its images; a pause over the {run.idle_s:g} s idle period between sessions, "
             "so targets that scale to zero pay a cold start). " + _where_run(run), "",
             "Images: " + ", ".join(f"{i} {s / 2**20:.2f} MiB" for i, s in run.images.items()) + ".", "",
             f"Profile: {d['requests_per_day']:g} requests a day in bursts of {d['burst_size']:g}, {d['think_time_s']:g} s "
             f"think time, {d['idle_gap_s']:g} s between bursts; mix " +
             ", ".join(f"{k} {v:.0%}" for k, v in d["mix"].items()) + ".", "",
             "## Side by side", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    limits = {t.target: t.limits for t in run.targets}
    lines.append(_row("max payload (request)", [_mb(limits[n].get("request_bytes")) for n in names]))
    lines.append(_row("max payload (response)", [_mb(limits[n].get("response_bytes")) for n in names]))
    platform = {t.target: t.platform for t in run.targets}
    lines.append(_row("GPU", [GPU[platform[n]] for n in names]))
    lines.append(_row("scale to zero", ["yes" if limits[n].get("scales_to_zero") else "no (billed while idle)" for n in names]))
    lines.append(_row("memory cap (platform maximum)", [MEMORY.get(platform[n]) or (f"{limits[n]['memory_mb']:,} MB" if limits[n].get("memory_mb") else "-")
                                     for n in names]))
    lines.append(_row("invocation timeout", [f"{limits[n].get('timeout_s'):g} s" for n in names]))
    lines.append(_row("cold start (median, measured)", [f"{_s(a[n]['cold_start_s']['median'])} ({a[n]['cold_start_s']['n']}x)"
                                                         for n in names]))
    lines.append(_row("first request to first response", [_s(a[n]["first_response_s"]) for n in names]))
    for kind in KINDS:
        for q in ("p50", "p95", "p99"):
            lines.append(_row(f"{kind} {q}", [_s(a[n]["latency"][kind][q]) + (f" (n={a[n]['latency'][kind]['n']})" if q == "p50" else "")
                                              for n in names]))
    lines.append(_row("throughput (answered / busy s)", [f"{a[n]['throughput_rps']:.2f} req/s" for n in names]))
    lines.append(_row("answered", [f"{a[n]['ok']}/{a[n]['requests']}" for n in names]))
    for cause in CAUSES:
        lines.append(_row(f"failures: {cause}", [str(a[n]["failures"][cause]) for n in names]))
    lines.append(_row("workarounds", ["; ".join(f"{k} x{v}" for k, v in a[n]["workarounds"].items()) or "-" for n in names]))
    lines.append(_row("monthly cost (measured seconds)", [_usd(costs[n].usd_month) if n in costs else "-" for n in names]))
    bench = analysis["bench"]
    if bench.get("costs"):
        lines.append(_row(f"monthly cost ({bench['model']}, bench/results seconds)",
                          [_usd(bench["costs"][n].usd_month) if n in bench["costs"] else "-" for n in names]))
    lines += ["", "Failures are counted per request; \"skipped\" is a prompt on an image whose first prompt failed (it had "
              "no image_id to reuse). The cold start is the server process's start to ready (the emulator measures it); "
              "the image pull and the VM or container start of the cloud come on top.", ""]
    rec = analysis["recommendation"]
    lines += ["## Recommendation for this profile", "", f"**{rec['target']}**.", ""] + [f"- {w}" for w in rec["why"]] + [""]
    lines += ["## Against the seed article", "",
              "Claims of `../shared/seeds/000_2eced784b051e6d3.txt` (個人開発でAmazon SageMaker AIを使用する時に躓いたこと), "
              "checked against this run:", ""] + [f"- {x}" for x in seed_checks(run, analysis)] + [""]
    lines += ["## Monthly cost, with the formula", "",
              f"`deploy/compare/costs.py` with each target's measured median seconds per kind (latency less any cold start paid) and "
              f"measured cold start; async pays a {ASYNC_LAUNCH_S} s instance launch (not measured locally). Prices: "
              "`deploy/compare/prices.py` (the table, with sources and dates)" +
              (", read live where the price APIs answered." if analysis["prices"]["mode"] == "live" else ".") , ""]
    lines += [f"- prices: {note}" for note in analysis["prices"]["notes"]] + ([""] if analysis["prices"]["notes"] else [])
    for n in names:
        if n not in costs:
            continue
        c = costs[n]
        t = a[n]["timing"]
        lines += [f"### {n}: {_usd(c.usd_month)} a month", "",
                  f"seconds per request: point {t['point']:.3f}, point_cached {t['point_cached']:.3f}, everything "
                  f"{t['everything']:.3f}, cold start {t['cold_start_s']:.2f} ({t['source']})", "", "```", c.formula, "```", ""]
        lines += [f"- {note}" for note in c.notes] + ([""] if c.notes else [])
    lines += ["## Break-even points", "",
              f"Requests per day where one target becomes cheaper than another ({RANGE[0]:g} to {RANGE[1]:,.0f} a day, the "
              "rest of the profile held):", ""]
    lines += [f"- {b.requests_per_day:,.1f} requests/day: {b.cheaper_below} is cheaper below, {b.cheaper_above} above"
              for b in analysis["break_even"]] or ["- none in the range"]
    if bench.get("break_even"):
        lines += ["", f"With {bench['model']}'s seconds from bench/results ({bench['timing']['source']}):", ""]
        lines += [f"- {b.requests_per_day:,.1f} requests/day: {b.cheaper_below} below, {b.cheaper_above} above"
                  for b in bench["break_even"]]
    elif bench.get("error"):
        lines += ["", f"No {bench['model']} costs: {bench['error']}"]
    lines += ["", "## Charts", "", "![latency per request kind](latency.png)", "", "![monthly cost against requests per day](cost.png)",
              "", "## Not measured here", "",
              *(["- Real endpoints (`--aws-endpoint`, `--gcp-service`) were not given: every number above is the emulators'."]
                if not any(t.deployed for t in run.targets) else
                ["- A deployment's cold start is not observable from the client: its first answer per session is reported."]),
              "- The cloud's cold start beyond the server process (image pull, instance launch), GPUs, more than one instance.",
              ""]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    from dataclasses import is_dataclass

    if is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable(v) for k, v in asdict(x).items()} | ({"formula": x.formula} if hasattr(x, "formula") else {})
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and x != x:
        return None
    return x


def write_report(run: Run, workload: Workload, out_dir: str | Path, prices: Any = None) -> dict[str, Path]:
    """report.md, report.json, latency.png and cost.png in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis = analyse(run, workload, prices)
    pngs = charts(run, analysis, out_dir)
    md = out_dir / "report.md"
    md.write_text(markdown(run, workload, analysis))
    data = {k: v for k, v in analysis.items() if k not in ("cost_objects", "demand_object", "price_table")}
    data["seed_checks"] = seed_checks(run, analysis)
    data["run"] = run.to_json()
    js = out_dir / "report.json"
    js.write_text(json.dumps(_jsonable(data), indent=1, default=str))
    return {"report.md": md, "report.json": js, **{p.name: p for p in pngs}}
