"""``segany ui TARGET``: serve the page on localhost, forwarding its calls to TARGET."""

from __future__ import annotations

import logging
import sys

import click

logger = logging.getLogger("segany")


@click.command("ui")
@click.argument("target")
@click.option("--port", default=8500, show_default=True, type=int, help="Local port of the page.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it local: the "
              "page acts with your cloud credentials).")
@click.option("--region", default=None, help="aws: the endpoint's region; gcp:SERVICE: the service's region.")
@click.option("--upload", default=None, help="aws: s3://bucket/prefix for images over the mode's inline cap.")
@click.option("--project", default=None, help="gcp:SERVICE: the Google Cloud project.")
@click.option("--no-auth", is_flag=True, help="gcp: send no identity token (a public service).")
def ui(target: str, port: int, host: str, region: str | None, upload: str | None, project: str | None,
       no_auth: bool) -> None:
    """The web page for TARGET on http://HOST:PORT/ui/: a URL of any running service, aws:ENDPOINT
    (SageMaker, signed with your AWS credentials), gcp:SERVICE (with --project and --region) or a
    Cloud Run https://...run.app URL (with an identity token)."""
    from runners.errors import SegAnyError

    from deploy.ui.targets import target_for

    try:
        chosen = target_for(target, region=region, upload=upload, project=project, authenticate=not no_auth)
    except SegAnyError as exc:
        logger.error("%s", exc.message)
        sys.exit(2)
    import uvicorn

    from deploy.ui.app import forwarding_app

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forward is ours, below
    logger.info("the page for %s: http://%s:%d/ui/ (Ctrl+C stops it)", chosen.description, host, port)
    uvicorn.run(forwarding_app(chosen), host=host, port=port, log_level="warning")
