"""``segany build``: the OCI image, its variants, and the check against each target's limits.

    segany build                                   # CPU image, no weights, backend found on PATH
    segany build --device cuda --bake-weights sam_vit_h_4b8939.pth --oci-archive sam.tar

Steps: ``bentoml build`` (bentofile.yaml; its Dockerfile template is deploy/image/Dockerfile.j2),
``bentoml containerize`` with the variant as build arguments, and, with ``--bake-weights``, a
thin layer or two on top that hold the model (deploy/bake.py; the heavy layers stay shared
between variants). Then the image's reference, digest and size are printed, the size is checked
against SageMaker's and Cloud Run's limits (:func:`check_image`), and ``--oci-archive``
writes an OCI archive that ``skopeo copy oci-archive:... docker://...`` pushes anywhere.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from deploy import base_image
from deploy.bake import bake_command, bake_containerfile, reproducible_options
from deploy.image_labels import VERSION, package_version
from deploy.limits import CLOUD_RUN, GB, SAGEMAKER
from deploy.oci import ImageInfo, export_oci_archive, inspect_image
from runners.errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("docker", "podman", "buildah")
DEVICES = ("cpu", "cuda")
DEFAULT_IMAGE = "segment-anywhere"
OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CA_SECRET_ID = "segany-ca"
PINNED = ("torch", "torchvision", "openvino")  # pinned to this environment's versions by default
# Cloud Run sets no image size limit; past this, our guidance is to expect slow deploys and cold starts.
CLOUD_RUN_LARGE_IMAGE = 4 * GB
@dataclass(frozen=True)
class BuildOptions:
    project: Path = Path(".")
    backend: str | None = None  # None: docker (when its daemon answers), podman, buildah
    device: str = "cpu"
    bake_weights: Path | None = None
    model_type: str | None = None  # of the baked weights; None: read off them
    image: str = DEFAULT_IMAGE
    tag: str | None = None  # the final image's full reference; default image:device[-model]
    platform: str = "linux/amd64"
    base: str = "auto"  # auto, official, debian, or an image reference
    torch_index_url: str | None = None
    constraints: tuple[str, ...] = ()  # requirements every install satisfies (a name here replaces its pin)
    pin: bool = True  # pin torch and torchvision to this environment's versions
    keep_torch: bool = False  # cpu with baked weights: keep torch in the final image (default: left out)
    ca_bundle: Path | None = None  # handed to the build as a secret, never stored in the image
    oci_archive: Path | None = None
    debian_mirror: str = base_image.DEFAULT_MIRROR
    rebuild_base: bool = False


@dataclass(frozen=True)
class Variant:
    device: str
    baked_weights: bool
    torch_index_url: str | None = None
    torch: bool = True  # False: the image serves its converted model without torch (cpu, baked)

    @staticmethod
    def of(options: BuildOptions) -> Variant:
        return Variant(options.device, options.bake_weights is not None, options.torch_index_url,
                       torch=not leaves_out_torch(options))


@dataclass(frozen=True)
class Finding:
    target: str
    status: str  # ok, warn or fail
    message: str
    fixes: tuple[str, ...] = ()

    def __str__(self) -> str:
        fixes = "".join(f"\n      fix: {fix}" for fix in self.fixes)
        return f"  [{self.status.upper():4}] {self.target}: {self.message}{fixes}"


@dataclass
class BuildResult:
    image: ImageInfo
    variant: Variant
    base: str
    findings: list[Finding]
    unbaked: ImageInfo | None = None
    runtime: ImageInfo | None = None  # the image without torch that the baked one is built on
    archive: Path | None = None
    archive_digest: str | None = None
    archive_bytes: int | None = None
    steps: list[list[str]] = field(default_factory=list)


# --- the limit check ---------------------------------------------------------------------------


def check_image(size_bytes: int, variant: Variant) -> list[Finding]:
    """The image against each target's limits; a failed or warned check names the fix."""
    shrink = _shrink_fixes(variant)
    findings = []
    serverless = SAGEMAKER["serverless"]
    assert serverless.image_bytes is not None
    if variant.device == "cuda":
        findings.append(Finding("SageMaker Serverless", "fail", "Serverless Inference has no GPUs.",
                                ("build the CPU variant for it: --device cpu",)))
    elif size_bytes > serverless.image_bytes:
        findings.append(Finding("SageMaker Serverless", "fail",
                                f"image {_gb(size_bytes)} is over the {_gb(serverless.image_bytes)} limit.", shrink))
    else:
        findings.append(Finding("SageMaker Serverless", "ok",
                                f"image {_gb(size_bytes)} of at most {_gb(serverless.image_bytes)}."))
    findings.append(Finding("SageMaker real-time/async/batch", "ok", f"image {_gb(size_bytes)}; no image size limit."))
    assert CLOUD_RUN.image_bytes is None  # Cloud Run has none; the guidance below is ours
    if size_bytes > CLOUD_RUN_LARGE_IMAGE:
        findings.append(Finding("Cloud Run", "warn",
                                f"image {_gb(size_bytes)}: no size limit, but an image over {_gb(CLOUD_RUN_LARGE_IMAGE)} "
                                "makes deploys and cold starts slow.", shrink))
    else:
        findings.append(Finding("Cloud Run", "ok", f"image {_gb(size_bytes)}; no size limit."))
    if not variant.baked_weights:
        findings.append(Finding("Cloud Run", "ok", "weights download at start into /tmp, which is memory on Cloud "
                                "Run: give the service memory for the checkpoint (vit_h 2.4 GB) or bake it."))
    return findings


def _shrink_fixes(variant: Variant) -> tuple[str, ...]:
    fixes = []
    if variant.baked_weights:
        fixes.append("drop --bake-weights: serve the checkpoint from SEGANY_CHECKPOINT=s3://... or gs://..., "
                     "or from /opt/ml/model (segany package-model)")
    if variant.device == "cuda":
        fixes.append("build the CPU variant: --device cpu")
    elif variant.torch:
        fixes.append("drop --keep-torch: the converted model serves without torch (4.6 GB less)" if variant.baked_weights
                     else "bake the model: --bake-weights converts it at build time, and the image leaves torch out")
        if variant.torch_index_url is None:
            fixes.append(f"take CPU-only torch wheels: --torch-index-url {CPU_TORCH_INDEX}")
    return tuple(fixes)


def _gb(size: int) -> str:
    return f"{size / GB:.2f} GB"


# --- commands ----------------------------------------------------------------------------------


def choose_backend(requested: str | None) -> str:
    """``requested``, or the first usable of docker (its daemon must answer), podman, buildah."""
    if requested is not None:
        if requested not in BACKENDS:
            raise ConfigError(f"--backend {requested!r}: use one of {', '.join(BACKENDS)}.")
        if shutil.which(requested) is None:
            raise ConfigError(f"--backend {requested}: `{requested}` is not on PATH.")
        return requested
    for backend in BACKENDS:
        if shutil.which(backend) is None:
            continue
        if backend == "docker" and subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL).returncode != 0:
            logger.info("docker is installed but its daemon does not answer; trying podman, buildah")
            continue
        return backend
    raise ConfigError("no image builder found: install docker, podman or buildah.")


def default_constraints() -> tuple[str, ...]:
    """torch, torchvision and openvino at the versions of this environment (what the tests ran on)."""
    pins = []
    for name in PINNED:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        pins.append(f"{name}=={version.split('+')[0]}")
    return tuple(pins)


def image_refs(options: BuildOptions, model: str | None) -> tuple[str, str]:
    """(the image without weights, the final image): equal unless weights are baked."""
    unbaked = f"{options.image}:{options.device}"
    final = f"{unbaked}-{model}" if model else unbaked
    return unbaked, options.tag or final


def leaves_out_torch(options: BuildOptions) -> bool:
    """A cpu image with baked weights serves them converted, with OpenVINO alone: built, unless
    --keep-torch, on the image without torch (``NAME:cpu-slim``, build argument SEGANY_TORCH=0)."""
    return options.device == "cpu" and options.bake_weights is not None and not options.keep_torch


def slim_ref(options: BuildOptions) -> str:
    return f"{options.image}:{options.device}-slim"


def merge_constraints(pins: tuple[str, ...], given: tuple[str, ...]) -> tuple[str, ...]:
    """``given`` plus the pins of packages ``given`` does not name."""
    named = {_requirement_name(requirement) for requirement in given}
    return tuple(pin for pin in pins if _requirement_name(pin) not in named) + tuple(given)


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def build_args(options: BuildOptions, base_ref: str) -> dict[str, str]:
    constraints = merge_constraints(default_constraints() if options.pin else (), options.constraints)
    args = {"SEGANY_BASE_IMAGE": base_ref, "SEGANY_DEVICE": options.device,
            "SEGANY_PIP_CONSTRAINTS": " ".join(constraints)}
    if options.torch_index_url:
        args["SEGANY_TORCH_INDEX_URL"] = options.torch_index_url
    if options.device == "cuda":
        args["NVIDIA_VISIBLE_DEVICES"] = "all"
    return args


def bentoml_build_command(project: Path) -> list[str]:
    return [sys.executable, "-m", "bentoml", "build", str(project), "--output", "tag"]


def containerize_command(bento_tag: str, backend: str, ref: str, args: dict[str, str], *,
                         platform: str, ca_bundle: Path | None, iidfile: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "bentoml", "containerize", bento_tag, "--backend", backend, "--image-tag", ref,
               "--opt", f"platform={platform}"]
    for key, value in args.items():
        command += ["--opt", f"build-arg={key}={value}"]
    if ca_bundle is not None:
        command += ["--opt", f"secret=id={CA_SECRET_ID},src={ca_bundle.resolve()}"]
    if iidfile is not None and backend != "docker":  # docker's iidfile holds the config digest too, but not in all builders
        command += ["--opt", f"iidfile={iidfile}"]
    # The Dockerfile labels device, torch and weights=none itself; the version only segany knows.
    command += ["--opt", f"label={VERSION}={package_version()}"]
    # One layer per step, reused while unchanged, and every file at time 0: a code-only release
    # rebuilds only the code's layers, and its other layers come out with the same digests.
    for name, value in reproducible_options(backend).items():
        command += ["--opt", name if value is None else f"{name}={value}"]
    return command


def model_type_of(checkpoint: Path) -> str:
    """The SAM type whose shapes the checkpoint has (as the server reads it at start)."""
    from runners.models import checkpoint_spec

    spec = checkpoint_spec(checkpoint)
    if spec is None:
        raise ConfigError(f"{checkpoint} holds no SAM model of a known shape; check the file or pass --model-type.")
    return spec.name


def resolve_base(options: BuildOptions, backend: str) -> str:
    """The FROM image: official, the Debian-built one, or the given reference (auto: official if reachable)."""
    base = options.base
    if base == "auto":
        base = "official" if _official_reachable(backend) else "debian"
        if base == "debian":
            logger.info("%s cannot be reached: building the base from Debian packages instead", OFFICIAL_BASE)
    if base == "official":
        return OFFICIAL_BASE
    if base == "debian":
        return base_image.ensure_base_image(backend, mirror=options.debian_mirror, rebuild=options.rebuild_base)
    return base


def _official_reachable(backend: str) -> bool:
    if base_image.image_exists(backend, OFFICIAL_BASE):
        return True
    if shutil.which("skopeo") is None:
        return True  # cannot tell; the build itself will say if the pull fails
    probe = ["skopeo", "inspect", "--raw", "--retry-times", "0", f"docker://{OFFICIAL_BASE}"]
    try:
        return subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


# --- the build ---------------------------------------------------------------------------------


def build(options: BuildOptions) -> BuildResult:
    if options.device not in DEVICES:
        raise ConfigError(f"--device {options.device!r}: use cpu or cuda.")
    if options.keep_torch and (options.device != "cpu" or options.bake_weights is None):
        raise ConfigError("--keep-torch is for --device cpu with --bake-weights (every other image has torch): drop it.")
    if options.bake_weights is not None and not options.bake_weights.is_file():
        raise ConfigError(f"--bake-weights {options.bake_weights}: no such file.")
    if options.ca_bundle is not None and not options.ca_bundle.is_file():
        raise ConfigError(f"--ca-bundle {options.ca_bundle}: no such file.")
    backend = choose_backend(options.backend)
    env = dict(os.environ)
    if backend == "buildah":
        env.setdefault("BUILDAH_ISOLATION", "chroot")  # runs where runc cannot (containers, CI); build-time only
    model = None
    if options.bake_weights is not None:
        model = options.model_type or model_type_of(options.bake_weights)
    unbaked_ref, ref = image_refs(options, model)
    base_ref = resolve_base(options, backend)
    steps: list[list[str]] = []

    bento_tag = _bento_tag(_run(bentoml_build_command(options.project), env, steps, capture=True, cwd=options.project))
    with tempfile.TemporaryDirectory(prefix="segany-build-") as tmp:
        iidfile = Path(tmp) / "iid"
        _run(containerize_command(bento_tag, backend, unbaked_ref, build_args(options, base_ref),
                                  platform=options.platform, ca_bundle=options.ca_bundle, iidfile=iidfile),
             env, steps, cwd=Path(tempfile.gettempdir()))  # BentoML 1.4.36+ resolves the template against cwd (#5566)
        unbaked = inspect_image(backend, unbaked_ref)  # raises if the build did not produce it
        runtime = None
        if leaves_out_torch(options):  # the same bento without torch: the cpu bake's final stage
            _run(containerize_command(bento_tag, backend, slim_ref(options), {**build_args(options, base_ref), "SEGANY_TORCH": "0"},
                                      platform=options.platform, ca_bundle=options.ca_bundle),
                 env, steps, cwd=Path(tempfile.gettempdir()))
            runtime = inspect_image(backend, slim_ref(options))
        if options.bake_weights is not None and model is not None:
            context = Path(tmp) / "weights"
            context.mkdir()
            (context / "Containerfile").write_text(bake_containerfile(options.device))
            _link_or_copy(options.bake_weights, context / options.bake_weights.name)
            _run(bake_command(backend, context, unbaked_ref, ref, options.bake_weights.name, model, options.platform,
                              runtime.ref if runtime else None, options.device), env, steps)
    image = inspect_image(backend, ref)
    variant = Variant.of(options)
    result = BuildResult(image, variant, base_ref, check_image(image.size_bytes, variant),
                         unbaked=unbaked if ref != unbaked_ref else None, runtime=runtime, steps=steps)
    if options.oci_archive is not None:
        result.archive = options.oci_archive
        result.archive_digest, result.archive_bytes = export_oci_archive(backend, ref, options.oci_archive, env)
    return result


def report(result: BuildResult) -> str:
    image = result.image
    lines = [f"image   {image.ref}", f"id      {image.image_id}", f"digest  {image.digest or '(none until pushed)'}",
             f"size    {_gb(image.size_bytes)} uncompressed ({image.size_bytes} bytes)",
             f"variant {result.variant.device}, weights {_weights(result.variant)}",
             f"base    {result.base}"]
    if result.unbaked is not None:
        lines.append(f"without weights {result.unbaked.ref}: {_gb(result.unbaked.size_bytes)}")
    if result.runtime is not None:
        lines.append(f"without torch   {result.runtime.ref}: {_gb(result.runtime.size_bytes)} (what the baked image is built on)")
    if result.archive is not None:
        lines.append(f"archive {result.archive} ({_gb(result.archive_bytes or 0)} compressed, "
                     f"manifest {result.archive_digest}); push: skopeo copy oci-archive:{result.archive} docker://REGISTRY/NAME:TAG")
    lines.append("limits (checked on the uncompressed size):")
    lines.extend(str(finding) for finding in result.findings)
    return "\n".join(lines)


def _weights(variant: Variant) -> str:
    if not variant.baked_weights:
        return "fetched at start"
    if variant.device == "cuda":
        return "baked (the checkpoint, for torch)"
    return "baked (converted to OpenVINO), " + ("torch kept (--keep-torch)" if variant.torch else "no torch in the image")


def _bento_tag(output: str) -> str:
    match = re.search(r"__tag__:(\S+)", output)
    if match is None:
        raise ConfigError(f"bentoml build printed no bento tag:\n{output[-2000:]}")
    return match.group(1)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _run(command: list[str], env: dict[str, str], steps: list[list[str]], *, capture: bool = False,
         cwd: Path | None = None) -> str:
    """Run a build step with its output streamed (or captured); a failure ends the build with its tail."""
    logger.info("$ %s", " ".join(command))
    steps.append(command)
    if capture:
        result = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = result.stdout
    else:
        result = subprocess.run(command, env=env, cwd=cwd)
        output = ""
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(command[:4])} ...` failed (exit {result.returncode}).\n{output[-3000:]}")
    return output
