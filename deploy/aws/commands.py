"""The ``aws`` subcommands of ``segany deploy``, ``invoke``, ``status`` and ``destroy``: parse,
call deploy/aws/, print. boto3 is imported only when one of them runs."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from deploy.config import settings_values, validated
from runners.errors import SegAnyError

logger = logging.getLogger("segany")
MODES = click.Choice(["serverless", "realtime", "async", "batch"])


@contextmanager
def _progress() -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=False) as progress:
        yield progress


def _fail(exc: SegAnyError) -> None:
    """One message on stderr and exit 2 (what click does for its own usage errors)."""
    click.echo(f"Error: {exc.message}", err=True)
    raise SystemExit(2)


def _clients(region: str | None) -> Any:
    from deploy.aws.session import Clients

    return Clients(region)


def cost_line(s: Any, memory_mb: int | None) -> str:
    from deploy.aws.instances import PRICE_SOURCE, SERVERLESS_DATA_GB_USD, SERVERLESS_GB_SECOND_USD, instance_type

    if s.mode == "serverless":
        per_second = SERVERLESS_GB_SECOND_USD * (memory_mb or 0) / 1024
        return (f"cost: ${per_second:.6f} per second of compute at {memory_mb} MB (${SERVERLESS_GB_SECOND_USD} per GB-second) "
                f"+ ${SERVERLESS_DATA_GB_USD} per GB in and out; nothing while idle. Source: {PRICE_SOURCE}")
    kind = instance_type(s.instance_type)
    hourly = kind.usd_per_hour if kind else 0.0
    if s.mode == "batch":
        return f"cost: ${hourly * s.instance_count:.3f} per hour while the job runs ({s.instance_count} x {s.instance_type}). Source: {PRICE_SOURCE}"
    low, high = s.scaling_bounds
    idle = "nothing while scaled to zero" if low == 0 else f"${hourly * low:.3f} per hour even when idle"
    return (f"cost: ${hourly:.3f} per instance-hour ({s.instance_type}), {low}-{high} instances: {idle}, "
            f"up to ${hourly * high:.3f} per hour. Source: {PRICE_SOURCE}")


def summary(outcome: Any, region: str) -> str:
    r = outcome.resolved
    s = r.settings
    if s.mode == "batch":
        return f"{outcome.text}\n{cost_line(s, None)}"
    component = f', InferenceComponentName="{s.endpoint}"' if s.scale_to_zero_realtime else ""
    lines = [
        f"{outcome.text}: {'deployed' if outcome.plan else 'unchanged (this release already serves)'}",
        f"endpoint: {s.endpoint} ({region}), release {r.release}, model {r.model_type}",
        f"call it:  segany invoke aws --endpoint {s.endpoint} --region {region} photo.jpg --points '[[500,375]]'",
    ]
    if s.mode == "async":
        lines.append(f'boto3:    boto3.client("sagemaker-runtime").invoke_endpoint_async(EndpointName="{s.endpoint}", '
                     f'InputLocation="s3://.../photo.jpg", ContentType="image/jpeg", CustomAttributes="task=everything")'
                     f"  # result under {s.output}/results/")
    else:
        lines.append(f'boto3:    boto3.client("sagemaker-runtime").invoke_endpoint(EndpointName="{s.endpoint}"{component}, '
                     'ContentType="image/jpeg", Body=open("photo.jpg", "rb").read(), CustomAttributes="task=segment;points=[[500,375]]")')
    if s.scale_to_zero_realtime or (s.mode == "async" and s.scaling_bounds[0] == 0):
        lines.append("scale to zero: the first request after idle wakes it; that takes minutes "
                     f"({'requests fail meanwhile; segany invoke retries' if s.mode == 'realtime' else 'requests queue meanwhile'})")
    lines.append(cost_line(s, s.memory_mb))
    return "\n".join(lines)


@click.command("aws")
@click.option("--mode", type=MODES, default=None, help="serverless, realtime, async or batch.")
@click.option("--endpoint", default=None, help="The deployment's name (the Endpoint; batch: the models' and jobs' prefix).")
@click.option("--image", default=None, help="An image already in ECR.")
@click.option("--oci-archive", default=None, help="An OCI archive from segany build --oci-archive, pushed to ECR.")
@click.option("--local-image", default=None, help="A local image from segany build, pushed to ECR.")
@click.option("--repository", default=None, help="ECR repository (default segment-anywhere).")
@click.option("--registry", default=None, help="Push to this registry instead of the account's ECR.")
@click.option("--model", type=click.Choice(["tiny", "vit_b", "vit_l", "vit_h"]), default=None)
@click.option("--checkpoint", default=None, help="Weights not baked: a local .pth (packaged, uploaded once), s3:// or https://.")
@click.option("--bucket", default=None, help="S3 bucket for model.tar.gz (default segany-ACCOUNT-REGION).")
@click.option("--role-arn", default=None)
@click.option("--create-role", is_flag=True, default=None, help="Create a least-privilege execution role ENDPOINT-sagemaker.")
@click.option("--region", default=None)
@click.option("--env", "env", multiple=True, help="SEGANY_X=value for the container (repeatable).")
@click.option("--memory-mb", type=int, default=None)
@click.option("--max-concurrency", type=int, default=None)
@click.option("--provisioned-concurrency", type=int, default=None)
@click.option("--instance-type", default=None)
@click.option("--instance-count", type=int, default=None)
@click.option("--min-instances", type=int, default=None, help="0: scale to zero (real-time: as an inference component).")
@click.option("--max-instances", type=int, default=None)
@click.option("--health-check-timeout-s", type=int, default=None)
@click.option("--download-timeout-s", type=int, default=None)
@click.option("--output", default=None, help="s3:// results (async, batch).")
@click.option("--input", "input_", default=None, help="s3:// prefix of images (batch).")
@click.option("--sns-success-topic", default=None)
@click.option("--sns-error-topic", default=None)
@click.option("--max-concurrent-invocations", type=int, default=None)
@click.option("--max-payload-mb", type=int, default=None)
@click.option("--invocations-timeout-s", type=int, default=None)
@click.option("--task", type=click.Choice(["everything", "segment", "embed"]), default=None)
@click.option("--task-options", default=None, help="More custom attributes, e.g. 'output=rle;points_per_side=16'.")
@click.option("--deployment", type=click.Choice(["all-at-once", "canary", "linear"]), default=None)
@click.option("--traffic-percent", type=int, default=None)
@click.option("--wait-s", type=int, default=None)
@click.option("--poll-s", type=float, default=None)
@click.option("--config", "config", type=click.Path(path_type=Path), default=None, help="TOML file with an [aws] table.")
@click.option("--dry-run", is_flag=True, help="Print every call with its parameters, make none that changes anything.")
@click.option("--rollback", is_flag=True, help="Return the endpoint to the release before the serving one.")
def deploy_aws(config: Path | None, dry_run: bool, rollback: bool, env: tuple[str, ...], input_: str | None, **flags: Any) -> None:
    """Deploy the image to SageMaker: serverless, real-time (scale to zero with --min-instances 0), async or batch."""
    from deploy.aws.settings import AwsSettings

    try:
        pairs = dict(item.split("=", 1) for item in env if "=" in item)
        values = settings_values(config, "aws", {**flags, "input": input_, "env": pairs or None})
        if rollback:
            return _rollback(values, dry_run)
        settings = validated(AwsSettings, values, "aws")
        clients = _clients(settings.region)
        from deploy.aws.deploy import deploy

        if dry_run:
            click.echo(deploy(settings, clients, dry_run=True).text)
            return
        with _progress() as progress:
            outcome = deploy(settings, clients, dry_run=False, progress=progress)
        click.echo(summary(outcome, clients.region))
    except SegAnyError as exc:
        _fail(exc)


def _rollback(values: dict[str, Any], dry_run: bool) -> None:
    from deploy.aws.deploy import rollback
    from runners.errors import ConfigError

    if not values.get("endpoint"):
        raise ConfigError("--rollback needs --endpoint NAME")
    clients = _clients(values.get("region"))
    if dry_run:
        click.echo(rollback(values["endpoint"], clients, dry_run=True).text)
        return
    with _progress() as progress:
        outcome = rollback(values["endpoint"], clients, dry_run=False, poll_s=values.get("poll_s", 15), progress=progress)
    click.echo(outcome.text)


@click.command("aws")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", required=True)
@click.option("--region", default=None)
@click.option("--task", type=click.Choice(["segment", "everything", "embed"]), default="segment", show_default=True)
@click.option("--points", default=None, help="JSON [[x, y], ...]")
@click.option("--labels", default=None, help="JSON [1, 0, ...] (default: 1 for each point)")
@click.option("--boxes", default=None, help="JSON [[x0, y0, x1, y1], ...]")
@click.option("--output", "output", default="rle", show_default=True, help="rle, png, polygon or overlay")
@click.option("--upload", default=None, help="s3://bucket/prefix for images over the mode's inline cap.")
@click.option("--wake-timeout-s", type=float, default=900, show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the answer here.")
def invoke_aws(image: Path, endpoint: str, region: str | None, task: str, points: str | None, labels: str | None,
               boxes: str | None, output: str, upload: str | None, wake_timeout_s: float, out: Path | None) -> None:
    """Send one image to a deployment, the way its mode allows."""
    from deploy.aws.invoke import InvokeRequest, invoke
    from runners.errors import ConfigError

    try:
        try:
            parsed = {k: json.loads(v) if v else None for k, v in (("points", points), ("labels", labels), ("boxes", boxes))}
        except ValueError as exc:
            raise ConfigError(f"--points/--labels/--boxes must be JSON lists ({exc})") from None
        if parsed["points"] and parsed["labels"] is None:
            parsed["labels"] = [1] * len(parsed["points"])
        result = invoke(InvokeRequest(endpoint, image, task, output=output, upload=upload, wake_timeout_s=wake_timeout_s,
                                      **parsed), _clients(region))
    except SegAnyError as exc:
        _fail(exc)
    logger.info("answered in %.1f s (%s)", result.waited_s, result.how)
    if out:
        out.write_bytes(result.body)
    else:
        click.echo(result.body.decode(errors="replace"))


@click.command("aws")
@click.option("--endpoint", required=True)
@click.option("--region", default=None)
def status_aws(endpoint: str, region: str | None) -> None:
    """Releases, the one serving, scaling state and alarms of a deployment."""
    from deploy.aws.manage import status

    try:
        click.echo(status(endpoint, _clients(region)))
    except SegAnyError as exc:
        _fail(exc)


@click.command("aws")
@click.option("--endpoint", required=True)
@click.option("--region", default=None)
@click.option("--delete-outputs", is_flag=True, help="Also delete the async results in S3.")
@click.option("--dry-run", is_flag=True)
@click.option("--poll-s", type=float, default=15)
def destroy_aws(endpoint: str, region: str | None, delete_outputs: bool, dry_run: bool, poll_s: float) -> None:
    """Remove what segany deploy aws made for this deployment, and nothing else."""
    from deploy.aws.manage import destroy

    try:
        clients = _clients(region)
        if dry_run:
            click.echo(destroy(endpoint, clients, dry_run=True, delete_outputs=delete_outputs))
            return
        with _progress() as progress:
            click.echo(destroy(endpoint, clients, dry_run=False, delete_outputs=delete_outputs, poll_s=poll_s, progress=progress))
    except SegAnyError as exc:
        _fail(exc)
