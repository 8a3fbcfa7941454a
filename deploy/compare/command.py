"""``segany compare``: one workload against each target's emulator, side by side, with cost.

    segany compare --model tiny --out out/compare --requests 20
    segany compare --workload my.toml --targets sagemaker-serverless,cloudrun --idle-s 2
    segany compare --targets none --aws-endpoint sam --aws-region eu-west-1 --gcp-service https://sam-xyz.a.run.app \
        --deployed-idle-s 1200 --prices live

Writes report.md, report.json, latency.png and cost.png into --out; progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_TARGETS = "sagemaker-realtime,sagemaker-serverless,sagemaker-async,cloudrun,sagemaker-batch,cloudrun-job"


@click.command("compare", context_settings={"show_default": True})
@click.option("--workload", "workload_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Workload file (TOML or JSON); default: deploy/compare/default_workload.toml (the seed's interactive use).")
@click.option("--targets", default=DEFAULT_TARGETS, help="Comma-separated emulated targets, run in turn.")
@click.option("--model", type=click.Choice(["tiny", "vit_b", "vit_l", "vit_h"]), default=None,
              help="The model the servers run (default: the workload's).")
@click.option("--checkpoint", default=None, help="SEGANY_CHECKPOINT for the servers.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("compare-report"),
              help="Folder for report.md, report.json and the PNG charts.")
@click.option("--requests", type=click.IntRange(min=1), default=None,
              help="Requests per target (default: one session of the workload's burst size per image).")
@click.option("--idle-s", type=click.FloatRange(min=0.1), default=2.0,
              help="Emulated idle period before scale to zero; sessions are this far apart plus the scale-in.")
@click.option("--images-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the workload's generated images are written (default: a temporary folder).")
@click.option("--points-per-side", type=click.IntRange(min=1), default=16, help="segment-everything's grid.")
@click.option("--aws-endpoint", "aws_endpoints", multiple=True,
              help="A deployed SageMaker endpoint (segany deploy aws) to run the workload against too (repeatable).")
@click.option("--aws-region", default=None, help="The endpoints' region (default: the AWS configuration's).")
@click.option("--aws-upload", default=None, help="s3://bucket/prefix for images over an endpoint's inline cap.")
@click.option("--gcp-service", "gcp_services", multiple=True,
              help="A deployed Cloud Run service (segany deploy gcp): its name (with --gcp-project/--gcp-region) or URL.")
@click.option("--gcp-project", default=None)
@click.option("--gcp-region", default=None)
@click.option("--gcp-no-auth", is_flag=True, help="Send no identity token (a public service).")
@click.option("--deployed-idle-s", type=click.FloatRange(min=0), default=None,
              help="Pause between sessions on deployed targets (default --idle-s; past the platform's scale-in, "
                   "about 15 minutes, to measure cold starts).")
@click.option("--prices", "prices_mode", type=click.Choice(["table", "live"]), default="table",
              help="live: read the AWS Price List and Cloud Billing Catalog APIs (credentials allowing; the table "
                   "otherwise, with a note in the report).")
def compare(workload_path: Path | None, targets: str, model: str | None, checkpoint: str | None, out_dir: Path,
            requests: int | None, idle_s: float, images_dir: Path | None, points_per_side: int,
            aws_endpoints: tuple[str, ...], aws_region: str | None, aws_upload: str | None, gcp_services: tuple[str, ...],
            gcp_project: str | None, gcp_region: str | None, gcp_no_auth: bool, deployed_idle_s: float | None,
            prices_mode: str) -> None:
    """Run a workload against each target's emulator (and deployments) and report latency, failures, cost and break-even."""
    import shutil
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deploy.compare.prices import load_prices
    from deploy.compare.report import write_report
    from deploy.emulate.lifecycle import StartFailed
    from runners.errors import SegAnyError
    from deploy.compare.runner import ALL_TARGETS, plan, run_compare, server_env
    from deploy.compare.workload import load_workload

    from deploy.compare.clients import RealTarget

    chosen = () if targets.strip() == "none" else tuple(t.strip() for t in targets.split(",") if t.strip())
    unknown = [t for t in chosen if t not in ALL_TARGETS]
    deployed = tuple(RealTarget("aws", e, region=aws_region, upload=aws_upload) for e in aws_endpoints) + tuple(
        RealTarget("gcp", g, region=gcp_region, project=gcp_project, authenticate=not gcp_no_auth) for g in gcp_services)
    if unknown or not (chosen or deployed):
        raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: choose from {', '.join(ALL_TARGETS)} "
                                 "(or none, with --aws-endpoint / --gcp-service)", param_hint="--targets")
    if aws_upload and not aws_upload.startswith("s3://"):
        raise click.BadParameter(f"{aws_upload!r}: an s3://bucket/prefix", param_hint="--aws-upload")
    for g in gcp_services:
        if not g.startswith(("https://", "http://")) and not (gcp_project and gcp_region):
            raise click.BadParameter(f"{g}: give --gcp-project and --gcp-region, or the service's URL",
                                     param_hint="--gcp-service")
    try:
        workload = load_workload(workload_path)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--workload") from None
    model = model or workload.model
    count = len(plan(workload, requests))
    console = Console(stderr=True)
    cache = Path(tempfile.mkdtemp(prefix="segany-compare-cache-"))  # the converted model: removed at the end
    env = server_env(model, cache, checkpoint)
    with Progress(TextColumn("{task.description:<21}"), BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=console) as progress:
        tasks: dict[str, int] = {}

        def report(target: str, record) -> None:  # type: ignore[no-untyped-def]
            if target not in tasks:
                total = count if target != "priming" else None
                tasks[target] = progress.add_task(target, total=total, last="starting" if target != "priming"
                                                  else "filling the server's caches")
                return
            if record is None:
                return
            last = (f"{record.kind} {record.image}: " +
                    (f"{record.latency_s:.2f} s" if record.ok else f"failed ({record.cause})") +
                    (f", cold start {record.cold_start_s:.1f} s" if record.cold_start_s else ""))
            progress.update(tasks[target], advance=1, last=last)
            if "priming" in tasks:
                progress.update(tasks["priming"], total=1, completed=1, last="done")

        console.print(f"[bold]segany compare[/]: {workload.name}, model {model}, {count} requests x "
                      f"{len(chosen) + len(deployed)} targets, idle {idle_s:g} s")
        try:
            run = run_compare(workload, chosen, out_dir, model=model, requests=requests, idle_s=idle_s,
                              points_per_side=points_per_side, env=env, images_dir=images_dir,
                              progress=report, deployed=deployed, deployed_idle_s=deployed_idle_s)
        except (ValueError, FileNotFoundError, SegAnyError) as exc:
            raise click.ClickException(str(exc)) from None
        except StartFailed as exc:
            why = "killed for memory" if exc.oom else "it did not get ready"
            raise click.ClickException(f"the server did not start ({why}); check --model/--checkpoint. Its log:\n"
                                       f"{str(exc)[-1500:]}") from None
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    prices = load_prices(prices_mode, aws_region=aws_region or "us-east-1", gcp_region=gcp_region or "us-central1")
    for note in prices.notes:
        console.print(f"prices: {note}")
    paths = write_report(run, workload, out_dir, prices)
    for name, path in paths.items():
        console.print(f"{name}: {path}")
