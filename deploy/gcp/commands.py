"""The ``gcp`` subcommands of ``segany deploy``, ``invoke``, ``status`` and ``destroy``: parse,
call deploy/gcp/, print. google-cloud-run is imported only when one of them runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deploy.aws.commands import _fail, _progress
from deploy.config import settings_values, validated
from runners.errors import ConfigError, SegAnyError


def _clients() -> Any:
    from deploy.gcp.session import GcpClients

    return GcpClients()


def cost_line(s: Any) -> str:
    from deploy.gcp.prices import cost_text

    return cost_text(s)


def summary(outcome: Any) -> str:
    r = outcome.release
    s = r.settings
    if s.job:
        execution = (outcome.answers or {}).get("execution")
        counts = ""
        if execution is not None:
            from deploy.gcp.session import as_dict

            e = as_dict(execution)
            counts = f": {e.get('succeeded_count', 0)} task(s) succeeded, {e.get('failed_count', 0)} failed"
        manifest = (outcome.answers or {}).get("manifest")
        merged = (f"; {len(manifest['succeeded'])} image(s) done, {len(manifest['skipped'])} already there, "
                  f"{len(manifest['failed'])} failed ({s.output}/_manifest.json)") if manifest else ""
        return f"{outcome.text}{counts}{merged}\nresults under {s.output}/\n{cost_line(s)}"
    auth = "" if s.allow_unauthenticated else ' -H "Authorization: Bearer $(gcloud auth print-identity-token)"'
    lines = [f"{outcome.text}: {'deployed' if outcome.plan else 'unchanged (this release already serves)'}",
             f"revision: {r.revision} (tag {r.tag}){' behind its tag URL, no traffic' if s.no_traffic else ''}",
             f"call it:  segany invoke gcp --project {s.project} --region {s.region} --service {s.service} photo.jpg --points '[[500,375]]'",
             f"curl:     curl -s https://SERVICE-URL/segment{auth} -F image=@photo.jpg -F points='[[500,375]]' -F labels='[1]'",
             "session affinity is best effort: a follow-up by image_id may reach another instance and get "
             "image_not_found; send the image again then",
             cost_line(s)]
    return "\n".join(lines)


@click.command("gcp")
@click.option("--project", default=None)
@click.option("--region", default=None)
@click.option("--service", default=None, help="The service's (with --job, the job's) name.")
@click.option("--image", default=None)
@click.option("--oci-archive", default=None)
@click.option("--local-image", default=None)
@click.option("--repository", default=None, help="Artifact Registry repository (default segment-anywhere).")
@click.option("--create-repository", is_flag=True, default=None, help="Create the repository when it is missing.")
@click.option("--registry", default=None, help="Push here instead of Artifact Registry.")
@click.option("--model", type=click.Choice(["tiny", "vit_b", "vit_l", "vit_h"]), default=None)
@click.option("--checkpoint", default=None, help="gs:// weights when not baked.")
@click.option("--env", "env", multiple=True, help="SEGANY_X=value (repeatable).")
@click.option("--cpu", default=None)
@click.option("--memory", default=None)
@click.option("--gpu", type=click.Choice(["nvidia-l4"]), default=None)
@click.option("--gpu-zonal-redundancy/--no-gpu-zonal-redundancy", default=None)
@click.option("--cpu-always-allocated/--cpu-during-requests", default=None)
@click.option("--startup-cpu-boost/--no-startup-cpu-boost", default=None)
@click.option("--min-instances", type=int, default=None)
@click.option("--max-instances", type=int, default=None)
@click.option("--concurrency", type=int, default=None)
@click.option("--timeout-s", type=int, default=None)
@click.option("--service-account", default=None)
@click.option("--ingress", type=click.Choice(["all", "internal", "internal-and-cloud-load-balancing"]), default=None)
@click.option("--session-affinity/--no-session-affinity", default=None)
@click.option("--invoker", "invoker", multiple=True, help="IAM member granted roles/run.invoker (repeatable).")
@click.option("--allow-unauthenticated", is_flag=True, default=None)
@click.option("--no-traffic", is_flag=True, default=None, help="Deploy behind the revision's tag URL only.")
@click.option("--job", is_flag=True, default=None, help="A Cloud Run job over --input, run once.")
@click.option("--input", "input_", default=None)
@click.option("--output", default=None)
@click.option("--tasks", type=int, default=None)
@click.option("--parallelism", type=int, default=None)
@click.option("--task-timeout-s", type=int, default=None)
@click.option("--max-retries", type=int, default=None)
@click.option("--task", type=click.Choice(["everything", "segment", "embed"]), default=None)
@click.option("--config", "config", type=click.Path(path_type=Path), default=None, help="TOML file with a [gcp] table.")
@click.option("--dry-run", is_flag=True)
@click.option("--emit-yaml", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Knative Service YAML (gcloud run services replace FILE) and stop.")
@click.option("--rollback", is_flag=True, help="All traffic back to the revision before the serving one.")
def deploy_gcp(config: Path | None, dry_run: bool, emit_yaml: Path | None, rollback: bool, env: tuple[str, ...],
               invoker: tuple[str, ...], input_: str | None, **flags: Any) -> None:
    """Deploy the image to Cloud Run: a private, scale-to-zero service, or a job (--job)."""
    from deploy.gcp.settings import GcpSettings

    try:
        pairs = dict(item.split("=", 1) for item in env if "=" in item)
        values = settings_values(config, "gcp", {**flags, "input": input_, "invoker": invoker, "env": pairs or None})
        if rollback:
            return _rollback(values, dry_run)
        settings = validated(GcpSettings, values, "gcp")
        clients = _clients()
        from deploy.gcp.deploy import deploy

        if emit_yaml or dry_run:
            outcome = deploy(settings, clients, dry_run=True)
            if emit_yaml:
                from deploy.gcp.knative import emit_yaml as write

                write(outcome.release, str(emit_yaml))
                click.echo(f"wrote {emit_yaml}: gcloud run services replace {emit_yaml} --project {settings.project} "
                           f"--region {settings.region}")
            if dry_run:
                click.echo(outcome.text)
            return
        with _progress() as progress:
            outcome = deploy(settings, clients, dry_run=False, progress=progress)
        click.echo(summary(outcome))
    except SegAnyError as exc:
        _fail(exc)


def _rollback(values: dict[str, Any], dry_run: bool) -> None:
    from deploy.gcp.deploy import rollback

    missing = [k for k in ("project", "region") if not values.get(k)]
    if missing:
        raise ConfigError(f"--rollback needs {' and '.join('--' + m for m in missing)}")
    clients = _clients()
    service = values.get("service", "segment-anywhere")
    if dry_run:
        click.echo(rollback(values["project"], values["region"], service, clients, dry_run=True))
        return
    with _progress() as progress:
        click.echo(rollback(values["project"], values["region"], service, clients, dry_run=False, progress=progress))


def _where(project: str | None, region: str | None) -> tuple[str, str]:
    if not project or not region:
        raise ConfigError("give --project and --region")
    return project, region


@click.command("gcp")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", default=None)
@click.option("--region", default=None)
@click.option("--service", default="segment-anywhere", show_default=True)
@click.option("--url", default=None, help="Call this URL instead of the service's (e.g. a tag URL, or a local server).")
@click.option("--tag", default=None, help="A revision's tag: call its tag URL.")
@click.option("--no-auth", is_flag=True, help="Send no identity token (a public service, a local server).")
@click.option("--task", type=click.Choice(["segment", "everything", "embed"]), default="segment", show_default=True)
@click.option("--points", default=None)
@click.option("--labels", default=None)
@click.option("--boxes", default=None)
@click.option("--output", "output", default="rle", show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def invoke_gcp(image: Path, project: str | None, region: str | None, service: str, url: str | None, tag: str | None,
               no_auth: bool, task: str, points: str | None, labels: str | None, boxes: str | None, output: str,
               out: Path | None) -> None:
    """Send one image to the service (with an identity token unless --no-auth)."""
    from deploy.gcp.invoke import GcpInvoke, invoke, url_of

    try:
        try:
            fields = {k: json.loads(v) for k, v in (("points", points), ("labels", labels), ("boxes", boxes)) if v}
        except ValueError as exc:
            raise ConfigError(f"--points/--labels/--boxes must be JSON lists ({exc})") from None
        if "points" in fields and "labels" not in fields:
            fields["labels"] = [1] * len(fields["points"])
        if task != "embed":
            fields["output"] = output
        if url is None:
            project, region = _where(project, region)
            url = url_of(project, region, service, tag, _clients())
        status, body, _type = invoke(GcpInvoke(url, image, task, fields, authenticate=not no_auth))
    except SegAnyError as exc:
        _fail(exc)
    if out:
        out.write_bytes(body)
    else:
        click.echo(body.decode(errors="replace"))
    if status >= 400:
        raise SystemExit(2)


@click.command("gcp")
@click.option("--project", default=None)
@click.option("--region", default=None)
@click.option("--service", default="segment-anywhere", show_default=True)
def status_gcp(project: str | None, region: str | None, service: str) -> None:
    """Revisions, tags, the traffic split and invokers of the service."""
    from deploy.gcp.deploy import status

    try:
        click.echo(status(*_where(project, region), service, _clients()))
    except SegAnyError as exc:
        _fail(exc)


@click.command("gcp")
@click.option("--project", default=None)
@click.option("--region", default=None)
@click.option("--service", default="segment-anywhere", show_default=True)
@click.option("--job", is_flag=True, help="Delete the job of that name instead.")
@click.option("--delete-images", is_flag=True, help="Also delete the images its revisions ran from the registry.")
@click.option("--dry-run", is_flag=True)
def destroy_gcp(project: str | None, region: str | None, service: str, job: bool, delete_images: bool, dry_run: bool) -> None:
    """Delete the service (or job) segany deploy gcp made; its images only with --delete-images."""
    from deploy.gcp.deploy import destroy

    try:
        where = _where(project, region)
        if dry_run:
            click.echo(destroy(*where, service, _clients(), job=job, dry_run=True, delete_images=delete_images))
            return
        with _progress() as progress:
            click.echo(destroy(*where, service, _clients(), job=job, dry_run=False, progress=progress,
                               delete_images=delete_images))
    except SegAnyError as exc:
        _fail(exc)
