"""The ``segany`` command.

    segany weights tiny --out tiny.pth           # the deterministic test model
    segany weights vit_b --random --out b.pth    # random-init, official shape (benchmarks)
    segany weights vit_h --out sam_vit_h.pth     # the official checkpoint, downloaded and verified
    segany serve --port 3000                     # bentoml serve service:SegmentAnything
    segany entrypoint [serve]                    # the image's entrypoint: SageMaker (serve) or Cloud Run
    segany package-model --checkpoint sam_vit_h.pth --out model.tar.gz   # SageMaker's model artifact
    segany deploy aws --mode serverless --endpoint sam --oci-archive sam.tar --role-arn ARN   # and invoke/status/destroy aws
    segany ui http://localhost:3000              # the web page on localhost for any target (aws:ENDPOINT, gcp:SERVICE)
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
from runners.settings import MODEL_TYPES

MODEL_TYPE = click.Choice(list(reversed(MODEL_TYPES)))  # tiny, vit_b, vit_l, vit_h

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
    if not verbose:  # one line per HTTP call (readiness polls, S3 reads) drowns the command's own output
        for name in ("httpx", "httpcore", "botocore", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)


@main.command()
@click.argument("model_type", type=MODEL_TYPE)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the .pth file.")
@click.option("--random", "random_init", is_flag=True, help="Random-init weights of the official shape instead of the official file.")
@click.option("--seed", default=0, show_default=True, help="Seed of random-init weights.")
def weights(model_type: str, out: Path, random_init: bool, seed: int) -> None:
    """Write a SAM checkpoint: tiny (always generated), random-init, or the official download."""
    from runners.models import write_checkpoint
    from runners.specs import get_spec

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
@click.option("--model-type", type=MODEL_TYPE, default=None,
              help="Checked against the weights; default: read off them.")
def package_model(checkpoint: str, out: Path, model_type: str | None) -> None:
    """Write model.tar.gz as SageMaker expects it (extracted into /opt/ml/model)."""
    from deploy.aws.model_artifact import package_model as package

    _run(lambda: package(checkpoint, out, model_type))
    logger.info("wrote %s (%.1f MB); upload it to S3 and give its URI as the model's ModelDataUrl", out, out.stat().st_size / 1e6)


@main.command()
@click.option("--backend", type=click.Choice(["docker", "podman", "buildah"]), default=None,
              help="Image builder. Default: docker when its daemon answers, else podman, else buildah.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cpu: no triton (and CPU-only torch with --torch-index-url); cuda: for GPU instances.")
@click.option("--bake-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Put this checkpoint in the image. Default: weights are fetched at start (SEGANY_CHECKPOINT, /opt/ml/model).")
@click.option("--model-type", type=MODEL_TYPE, default=None,
              help="Type of the baked checkpoint; default: read off its shapes.")
@click.option("--image", default="segment-anywhere", show_default=True, help="Image name; tags are DEVICE[-MODEL].")
@click.option("--tag", default=None, help="Full reference of the final image, instead of IMAGE:DEVICE[-MODEL].")
@click.option("--platform", default="linux/amd64", show_default=True, help="Target platform (SageMaker needs linux/amd64).")
@click.option("--base", default="auto", show_default=True,
              help="auto (official Python image if its registry answers, else debian), official, debian "
                   "(built here from Debian packages with debootstrap), or an image reference.")
@click.option("--torch-index-url", default=None,
              help="Take torch/torchvision from this index first, e.g. https://download.pytorch.org/whl/cpu (CPU-only, small).")
@click.option("--constraint", "constraints", multiple=True,
              help="A requirement every install in the image satisfies (repeatable), e.g. 'numpy<3'. torch, "
                   "torchvision and openvino are pinned to this environment's versions unless named here.")
@click.option("--no-pin", is_flag=True, help="No default torch/torchvision/openvino pins: the newest the index has.")
@click.option("--keep-torch", is_flag=True,
              help="cpu with --bake-weights: keep torch in the image (for SEGANY_ENCODER/SEGANY_DECODER=torch with "
                   "SEGANY_CHECKPOINT). Default: left out (4.6 GB); the converted model serves without it.")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CA bundle for reaching the package index during the build (a build secret; never in the image).")
@click.option("--oci-archive", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the image as an OCI archive (push it with skopeo copy oci-archive:PATH docker://...).")
@click.option("--debian-mirror", default="http://deb.debian.org/debian", show_default=True, help="For --base debian.")
@click.option("--rebuild-base", is_flag=True, help="Rebuild the Debian base even if it exists.")
@click.option("--project", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The project directory (bentofile.yaml). Default: where service.py is.")
def build(backend, device, bake_weights, model_type, image, tag, platform, base, torch_index_url, constraints,  # type: ignore[no-untyped-def]
          no_pin, keep_torch, ca_bundle, oci_archive, debian_mirror, rebuild_base, project) -> None:
    """Build the OCI image (bentoml build + containerize) and check it against each target's limits."""
    from deploy.build import BuildOptions, build as build_image, report

    if project is None:
        import importlib.util

        spec = importlib.util.find_spec("service")
        project = Path(spec.origin).resolve().parent if spec and spec.origin else Path.cwd()
    options = BuildOptions(
        project=project, backend=backend, device=device, bake_weights=bake_weights, model_type=model_type,
        image=image, tag=tag, platform=platform, base=base, torch_index_url=torch_index_url,
        constraints=tuple(constraints), pin=not no_pin, keep_torch=keep_torch, ca_bundle=ca_bundle,
        oci_archive=oci_archive, debian_mirror=debian_mirror, rebuild_base=rebuild_base,
    )
    result = _run(lambda: build_image(options))
    click.echo(report(result))


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for image_encoder, prompt_decoder and mask_decoder .xml/.bin; serve it with SEGANY_OPENVINO_DIR.")
@click.option("--model-type", type=MODEL_TYPE, default=None)
@click.option("--int8-calibration", type=click.Path(path_type=Path), default=None,
              help="Quantize to int8 (needs nncf), calibrated on the photos in this folder; serve with SEGANY_PRECISION=int8.")
def convert(checkpoint: Path, out: Path, model_type: str | None, int8_calibration: Path | None) -> None:
    """Convert the image encoder to OpenVINO ahead of time (e.g. while building an image)."""
    from runners.converted import torch_available, without_torch

    def conversion() -> None:
        if not torch_available():  # the cpu image with baked weights
            raise without_torch("segany convert", "run it where torch is installed")
        from runners.convert import convert as run_conversion

        run_conversion(checkpoint, model_type, out, int8_calibration)

    _run(conversion)
    logger.info("converted; serve with SEGANY_OPENVINO_DIR=%s%s", out, " SEGANY_PRECISION=int8" if int8_calibration else "")


@main.command(context_settings={"show_default": True})
@click.argument("input_uri", metavar="INPUT", required=False)
@click.argument("output_uri", metavar="OUTPUT", required=False)
@click.option("--task", type=click.Choice(["everything", "segment", "embed"]), default="everything",
              help="The endpoint to run on each image: /segment_everything, /segment or /embed.")
@click.option("--model", type=MODEL_TYPE, default=None, help="SEGANY_MODEL for this run.")
@click.option("--checkpoint", default=None, help="SEGANY_CHECKPOINT for this run (path, https://, s3://, gs://).")
@click.option("--output-format", type=click.Choice(["rle", "png", "polygon", "overlay"]), default=None,
              help="The request's output (default rle); overlay writes IMAGE.png instead of IMAGE.json.")
@click.option("--points", default=None, help="segment: JSON [[x, y], ...] in pixels.")
@click.option("--labels", default=None, help="segment: JSON [1, 0, ...], one per point (default: 1 for each).")
@click.option("--boxes", default=None, help="segment: JSON [[x0, y0, x1, y1], ...] in pixels.")
@click.option("--options", default=None, help="JSON object of other request fields, e.g. '{\"points_per_side\": 16}'.")
@click.option("--tasks", type=click.IntRange(min=1), default=None,
              help="Task count (default CLOUD_RUN_TASK_COUNT, else 1); without a task index, all of them run here.")
@click.option("--task-index", type=click.IntRange(min=0), default=None,
              help="This task's index (default CLOUD_RUN_TASK_INDEX, else 0).")
@click.option("--merge", "merge_only", default=None, metavar="OUTPUT", help="Only join OUTPUT's task manifests.")
def batch(input_uri, output_uri, task, model, checkpoint, output_format, points, labels, boxes, options, tasks,  # type: ignore[no-untyped-def]
          task_index, merge_only) -> None:
    """Every image under INPUT (a folder, s3:// or gs:// prefix) through the model, in process, one
    result per image under OUTPUT (what the HTTP API answers), with a manifest per task under
    OUTPUT/_manifest/; what `segany deploy gcp --job` runs in each task. Exits 2 when an image failed."""
    import functools
    import json as json_module

    from deploy import batch as runner

    if merge_only:
        merged = _run(lambda: runner.merge_manifests(merge_only))
        logger.info("%d written, %d already there, %d failed (%d of %d tasks): %s/_manifest.json", len(merged["succeeded"]),
                    len(merged["skipped"]), len(merged["failed"]), merged["tasks"], merged["task_count"], merge_only)
        sys.exit(2 if merged["failed"] or merged["missing_tasks"] else 0)

    def parse():  # type: ignore[no-untyped-def]
        from runners.errors import ConfigError
        from runners.settings import Settings

        if not (input_uri and output_uri):
            raise ConfigError("give INPUT and OUTPUT (or --merge OUTPUT)")
        fields = {}
        for name, value in (("options", options), ("points", points), ("labels", labels), ("boxes", boxes)):
            if value is None:
                continue
            try:
                parsed = json_module.loads(value)
            except ValueError as exc:
                raise ConfigError(f"--{name} is not JSON ({exc}): {value}") from None
            if name != "options":
                fields[name] = parsed
            elif isinstance(parsed, dict):
                fields.update(parsed)
            else:
                raise ConfigError(f"--options must be a JSON object, e.g. '{{\"points_per_side\": 16}}', not {value}")
        if task != "segment" and {"points", "labels", "boxes"} & set(fields):
            raise ConfigError("--points, --labels and --boxes are prompts for --task segment")
        if "points" in fields and "labels" not in fields and isinstance(fields["points"], list):
            fields["labels"] = [1] * len(fields["points"])
        if output_format is not None:
            if task == "embed":
                raise ConfigError("--output-format is for segment and everything; embed writes .npy")
            fields["output"] = output_format
        overrides = {name: value for name, value in (("SEGANY_MODEL", model), ("SEGANY_CHECKPOINT", checkpoint)) if value}
        settings = Settings.from_env({**os.environ, **overrides})
        first = runner.BatchSpec.sharded_from_env(input_uri, output_uri, task, fields, task_index, tasks)
        every = task_index is None and not os.environ.get("CLOUD_RUN_TASK_INDEX")  # no index: all tasks, here
        specs = [replace(first, task_index=i) for i in range(first.task_count)] if every else [first]
        if not runner.images_under(runner.open_store(input_uri)):  # a folder or bucket that is not there says so here
            raise ConfigError(f"no {', '.join(runner.IMAGE_SUFFIXES)} image under {input_uri}")
        return specs, settings

    specs, settings = _run(parse)  # every check before the model loads
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    json_logs = bool(os.environ.get("CLOUD_RUN_JOB")) or os.environ.get("SEGANY_LOG_FORMAT", "").lower() == "json"
    if json_logs:  # a Cloud Run job's task: one JSON line per record for Cloud Logging, as the service does, no bar
        from deploy.gcp.contract import CloudLoggingFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(CloudLoggingFormatter(os.environ.get("GOOGLE_CLOUD_PROJECT")))
        logging.getLogger().handlers = [handler]

    def run() -> tuple[list[dict], dict | None]:
        load = functools.cache(lambda: runner.load_pipeline(settings))  # one model for every task run here
        columns = (TextColumn("segany batch {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=json_logs) as bar:
            manifests = [runner.run_batch(spec, load, bar, settings=settings) for spec in specs]
        merged = runner.merge_manifests(specs[0].output) if len(specs) == specs[0].task_count else None
        return manifests, merged

    manifests, merged = _run(run)
    failed = sum(len(m["failed"]) for m in manifests)
    where = f"{specs[0].output.rstrip('/')}/_manifest.json" if merged else ", ".join(m["manifest"] for m in manifests)
    logger.info("%d written, %d already there, %d failed; manifest %s", sum(len(m["succeeded"]) for m in manifests),
                sum(len(m["skipped"]) for m in manifests), failed, where)
    if failed:
        logger.error("%d image(s) failed; their codes and messages are in %s", failed, where)
        sys.exit(2)


@main.group()
def deploy() -> None:
    """Deploy the image: segany deploy aws|gcp ... (see segany deploy aws --help)."""


@main.group()
def invoke() -> None:
    """Send a request to a deployment."""


@main.group()
def status() -> None:
    """Show a deployment's releases and state."""


@main.group()
def destroy() -> None:
    """Remove a deployment."""


def _add_cloud_commands() -> None:
    from deploy.aws.commands import deploy_aws, destroy_aws, invoke_aws, status_aws
    from deploy.gcp.commands import deploy_gcp, destroy_gcp, invoke_gcp, status_gcp

    for group, commands in ((deploy, (deploy_aws, deploy_gcp)), (invoke, (invoke_aws, invoke_gcp)),
                            (status, (status_aws, status_gcp)), (destroy, (destroy_aws, destroy_gcp))):
        for command in commands:
            group.add_command(command)


_add_cloud_commands()


def _add_emulate_command() -> None:
    from deploy.emulate.command import emulate

    main.add_command(emulate)


_add_emulate_command()


def _add_compare_command() -> None:
    from deploy.compare.command import compare

    main.add_command(compare)


_add_compare_command()


def _add_ui_command() -> None:
    from deploy.ui.command import ui

    main.add_command(ui)


_add_ui_command()


def _run(action):  # type: ignore[no-untyped-def]
    """Run ``action``; a SegAnyError ends the command with its message and status 2."""
    try:
        return action()
    except SegAnyError as exc:
        logger.error("%s", exc.message)
        sys.exit(2)


if __name__ == "__main__":
    main()
