"""The ``segany`` command.

    segany weights tiny --out tiny.pth           # the deterministic test model
    segany weights vit_b --random --out b.pth    # random-init, official shape (benchmarks)
    segany weights vit_h --out sam_vit_h.pth     # the official checkpoint, downloaded and verified
    segany serve --port 3000                     # bentoml serve service:SegmentAnything
    segany entrypoint [serve]                    # the image's entrypoint: SageMaker (serve) or Cloud Run
    segany package-model --checkpoint sam_vit_h.pth --out model.tar.gz   # SageMaker's model artifact
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click

from runners.errors import SegAnyError

logger = logging.getLogger("segany")
SERVICE = "service:SegmentAnything"


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """segment-anywhere: Segment Anything served anywhere."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=None)],
    )


@main.command()
@click.argument("model_type", type=click.Choice(["tiny", "vit_b", "vit_l", "vit_h"]))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the .pth file.")
@click.option("--random", "random_init", is_flag=True, help="Random-init weights of the official shape instead of the official file.")
@click.option("--seed", default=0, show_default=True, help="Seed of random-init weights.")
def weights(model_type: str, out: Path, random_init: bool, seed: int) -> None:
    """Write a SAM checkpoint: tiny (always generated), random-init, or the official download."""
    from runners.models import get_spec, write_checkpoint

    spec = get_spec(model_type)
    if model_type == "tiny" or random_init:
        write_checkpoint(spec, out, seed=seed)
    else:
        from runners.checkpoints import resolve_checkpoint
        from runners.settings import Settings

        settings = replace(Settings.from_env(), model_type=model_type, checkpoint=spec.checkpoint_url)
        _run(lambda: shutil.copyfile(resolve_checkpoint(settings, spec).path, out))
    logger.info("wrote %s checkpoint to %s (%.1f MB)", model_type, out, out.stat().st_size / 1e6)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.pass_context
def serve(ctx: click.Context, port: int, host: str) -> None:
    """Run the service (``bentoml serve``); extra arguments go to bentoml."""
    import importlib.util

    spec = importlib.util.find_spec("service")  # located, not imported: bentoml imports it
    working_dir = Path(spec.origin).resolve().parent if spec and spec.origin else Path.cwd()
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--port", str(port), "--host", host,
               "--working-dir", str(working_dir), *ctx.args]
    sys.exit(subprocess.call(command, env=os.environ.copy()))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
def entrypoint(args: tuple[str, ...]) -> None:
    """The container entrypoint: `serve` for SageMaker, no argument for Cloud Run."""
    from deploy.entrypoint import run

    _run(lambda: run(args))


@main.command("package-model")
@click.option("--checkpoint", required=True, help="Local path, https://, s3:// or gs:// URI of the SAM checkpoint.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.tar.gz"), show_default=True)
@click.option("--model-type", type=click.Choice(["tiny", "vit_b", "vit_l", "vit_h"]), default=None,
              help="Checked against the weights; default: read off them.")
def package_model(checkpoint: str, out: Path, model_type: str | None) -> None:
    """Write model.tar.gz as SageMaker expects it (extracted into /opt/ml/model)."""
    from deploy.aws.model_artifact import package_model as package

    _run(lambda: package(checkpoint, out, model_type))
    logger.info("wrote %s (%.1f MB); upload it to S3 and give its URI as the model's ModelDataUrl", out, out.stat().st_size / 1e6)


def _run(action):  # type: ignore[no-untyped-def]
    """Run ``action``; a SegAnyError ends the command with its message and status 2."""
    try:
        return action()
    except SegAnyError as exc:
        logger.error("%s", exc.message)
        sys.exit(2)


if __name__ == "__main__":
    main()
