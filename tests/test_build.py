"""`segany build`: command construction, variants, the limit check (no builder needed)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy import base_image, build
from deploy.build import BuildOptions, Finding, Variant, check_image
from deploy.image_labels import package_version
from deploy.image import install
from deploy.limits import GB, SAGEMAKER
from deploy.oci import archive_manifest, export_command, image_info
from runners.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def by_target(findings: list[Finding]) -> dict[str, Finding]:
    return {f.target: f for f in findings if "weights download" not in f.message}


# --- limits ------------------------------------------------------------------------------------


def test_small_cpu_image_passes_everywhere() -> None:
    findings = by_target(check_image(int(1.6 * GB), Variant("cpu", baked_weights=False, torch_index_url="x")))
    assert {f.status for f in findings.values()} == {"ok"}
    assert "1.60 GB" in findings["SageMaker Serverless"].message


def test_serverless_limit_is_ten_gb_and_names_the_fixes() -> None:
    limit = SAGEMAKER["serverless"].image_bytes
    assert limit == 10 * GB
    assert by_target(check_image(limit, Variant("cpu", True)))["SageMaker Serverless"].status == "ok"
    over = by_target(check_image(limit + 1, Variant("cpu", True)))["SageMaker Serverless"]
    assert over.status == "fail" and "10.00 GB" in over.message
    assert any("--bake-weights" in fix for fix in over.fixes)
    assert any("--torch-index-url https://download.pytorch.org/whl/cpu" in fix for fix in over.fixes)


def test_cuda_image_fails_serverless_whatever_its_size() -> None:
    finding = by_target(check_image(GB, Variant("cuda", False)))["SageMaker Serverless"]
    assert finding.status == "fail" and finding.fixes == ("build the CPU variant for it: --device cpu",)


def test_cloud_run_has_no_limit_but_warns_on_large_images() -> None:
    small = by_target(check_image(2 * GB, Variant("cpu", False, "x")))["Cloud Run"]
    large = by_target(check_image(7 * GB, Variant("cuda", True)))["Cloud Run"]
    assert small.status == "ok" and large.status == "warn"
    assert any("--device cpu" in fix for fix in large.fixes) and any("--bake-weights" in fix for fix in large.fixes)
    assert "[WARN] Cloud Run" in str(large) and "fix:" in str(large)


def test_unbaked_images_mention_cloud_run_memory_for_weights() -> None:
    notes = [f for f in check_image(GB, Variant("cpu", False)) if "weights download" in f.message]
    assert len(notes) == 1 and notes[0].target == "Cloud Run"
    assert not [f for f in check_image(GB, Variant("cpu", True)) if "weights download" in f.message]


# --- commands ----------------------------------------------------------------------------------


def test_build_args_per_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "default_constraints", lambda: ("torch==2.14.1", "torchvision==0.29.1"))
    cpu = build.build_args(BuildOptions(), "localhost/segany-base:bookworm")
    assert cpu == {"SEGANY_BASE_IMAGE": "localhost/segany-base:bookworm", "SEGANY_DEVICE": "cpu",
                   "SEGANY_PIP_CONSTRAINTS": "torch==2.14.1 torchvision==0.29.1"}
    cuda = build.build_args(BuildOptions(device="cuda", torch_index_url="https://i/whl/cu130",
                                         constraints=("torch==2.13.0", "numpy<3")), "b")
    assert cuda["NVIDIA_VISIBLE_DEVICES"] == "all" and cuda["SEGANY_TORCH_INDEX_URL"] == "https://i/whl/cu130"
    assert cuda["SEGANY_PIP_CONSTRAINTS"] == "torchvision==0.29.1 torch==2.13.0 numpy<3"
    assert build.build_args(BuildOptions(pin=False), "b")["SEGANY_PIP_CONSTRAINTS"] == ""


def test_default_constraints_are_this_environments_torch() -> None:
    from importlib import metadata

    pins = dict(pin.split("==") for pin in build.default_constraints())
    assert pins["torch"] == metadata.version("torch").split("+")[0]
    assert {"torch", "torchvision"} <= set(pins) <= {"torch", "torchvision", "openvino"}


def test_containerize_command(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    command = build.containerize_command("segment-anywhere:abc", "buildah", "segment-anywhere:cpu",
                                         {"SEGANY_DEVICE": "cpu", "SEGANY_PIP_CONSTRAINTS": "torch==2 torchvision==0"},
                                         platform="linux/amd64", ca_bundle=ca, iidfile=tmp_path / "iid")
    assert command[:3] == [sys.executable, "-m", "bentoml"]
    assert command[3:9] == ["containerize", "segment-anywhere:abc", "--backend", "buildah", "--image-tag", "segment-anywhere:cpu"]
    opts = [command[i + 1] for i, arg in enumerate(command) if arg == "--opt"]
    assert opts == ["platform=linux/amd64", "build-arg=SEGANY_DEVICE=cpu",
                    "build-arg=SEGANY_PIP_CONSTRAINTS=torch==2 torchvision==0",
                    f"secret=id=segany-ca,src={ca}", f"iidfile={tmp_path / 'iid'}",
                    f"label=io.segment-anywhere.version={package_version()}",
                    "layers", "timestamp=0"]  # buildah: a layer per step, cached; files and dates at time 0
    docker = build.containerize_command("t", "docker", "r", {}, platform="linux/amd64", ca_bundle=None)
    assert not any(arg.startswith(("secret=", "iidfile=")) for arg in docker)
    docker_opts = [docker[i + 1] for i, arg in enumerate(docker) if arg == "--opt"]
    assert "build-arg=SOURCE_DATE_EPOCH=0" in docker_opts and "layers" not in docker_opts
    podman = build.containerize_command("t", "podman", "r", {}, platform="linux/amd64", ca_bundle=None)
    assert podman[-2:] == ["--opt", "timestamp=0"]  # podman caches layers by default


def test_containerize_opts_reach_buildah_as_reproducible_flags() -> None:
    """--opt layers and --opt timestamp=0 become buildah's --layers and --timestamp 0 (through BentoML)."""
    from bentoml._internal.container.buildah import construct_build_args

    args = construct_build_args(context_path="/ctx", layers=True, timestamp=("0",),
                                label=("io.segment-anywhere.version=0.1.0",))
    assert args == ["--label", "io.segment-anywhere.version=0.1.0", "--layers", "--timestamp", "0", "/ctx"]


def test_containerize_opts_reach_buildah_as_flags() -> None:
    """BentoML turns our --opt values into these buildah arguments."""
    from bentoml._internal.container.buildah import construct_build_args

    args = construct_build_args(context_path="/ctx", build_arg=("SEGANY_DEVICE=cpu",), platform=("linux/amd64",),
                                secret=("id=segany-ca,src=/ca.pem",))
    assert args == ["--build-arg", "SEGANY_DEVICE=cpu", "--secret", "id=segany-ca,src=/ca.pem",
                    "--platform", "linux/amd64", "/ctx"]


def test_image_refs_and_bake_command(tmp_path: Path) -> None:
    assert build.image_refs(BuildOptions(), None) == ("segment-anywhere:cpu", "segment-anywhere:cpu")
    assert build.image_refs(BuildOptions(device="cuda"), "vit_h") == ("segment-anywhere:cuda", "segment-anywhere:cuda-vit_h")
    assert build.image_refs(BuildOptions(tag="r/x:1"), "tiny") == ("segment-anywhere:cpu", "r/x:1")
    command = build.bake_command("buildah", tmp_path, "segment-anywhere:cpu", "segment-anywhere:cpu-tiny",
                                 "tiny.pth", "tiny", "linux/amd64")
    assert command[:2] == ["buildah", "bud"] and command[-1] == str(tmp_path)
    assert "SEGANY_IMAGE=segment-anywhere:cpu" in command and "MODEL_TYPE=tiny" in command
    assert "SEGANY_RUNTIME_IMAGE=segment-anywhere:cpu" in command  # torch kept: the same image
    slim = build.bake_command("buildah", tmp_path, "segment-anywhere:cpu", "segment-anywhere:cpu-tiny",
                              "tiny.pth", "tiny", "linux/amd64", "segment-anywhere:cpu-slim")
    assert "SEGANY_IMAGE=segment-anywhere:cpu" in slim and "SEGANY_RUNTIME_IMAGE=segment-anywhere:cpu-slim" in slim
    assert build.bake_command("docker", tmp_path, "a", "b", "w.pth", "vit_b", "linux/amd64")[:2] == ["docker", "build"]
    # reproducible layers, and what the bake adds to the labels (device, torch, version come from below)
    assert command[command.index("--timestamp") + 1] == "0" and "--layers" in command
    labels = {command[i + 1] for i, arg in enumerate(command) if arg == "--label"}
    assert labels == {"io.segment-anywhere.model=tiny", "io.segment-anywhere.weights=converted"}
    cuda_bake = build.bake_command("podman", tmp_path, "a", "b", "w.pth", "vit_h", "linux/amd64", device="cuda")
    assert {cuda_bake[i + 1] for i, arg in enumerate(cuda_bake) if arg == "--label"} == {
        "io.segment-anywhere.model=vit_h", "io.segment-anywhere.weights=checkpoint"}
    assert "--layers" not in cuda_bake and cuda_bake[cuda_bake.index("--timestamp") + 1] == "0"
    docker_bake = build.bake_command("docker", tmp_path, "a", "b", "w.pth", "vit_b", "linux/amd64")
    assert "SOURCE_DATE_EPOCH=0" in docker_bake and "--timestamp" not in docker_bake
    # CUDA: the checkpoint as a layer, for the torch engine
    cuda = build.bake_containerfile("cuda")
    assert "COPY ${WEIGHTS} /opt/segany/weights/${WEIGHTS}" in cuda and "SEGANY_CHECKPOINT=/opt/segany/weights/${WEIGHTS}" in cuda
    assert "segany convert" not in cuda and "USER" not in cuda  # the base image's non-root user stays
    # CPU: converted in a build stage; only the converted folder reaches the image, no checkpoint
    cpu = build.bake_containerfile("cpu")
    converting, final = cpu.split("\n\n")
    assert "AS convert" in converting and "segany convert --checkpoint /tmp/weights/${WEIGHTS} --out /opt/segany/openvino" in converting
    assert "FROM ${SEGANY_IMAGE} AS convert" in converting and final.startswith("FROM ${SEGANY_RUNTIME_IMAGE}\n")
    assert "COPY --from=convert /opt/segany/openvino /opt/segany/openvino" in final
    # the manifest (it records the conversion's duration) is a layer of its own, after the model's
    assert "mv /opt/segany/openvino/manifest.json /opt/segany/manifest/" in converting
    copies = [line for line in final.splitlines() if line.startswith("COPY")]
    assert copies == ["COPY --from=convert /opt/segany/openvino /opt/segany/openvino",
                      "COPY --from=convert /opt/segany/manifest/manifest.json /opt/segany/openvino/manifest.json"]
    assert "SEGANY_OPENVINO_DIR=/opt/segany/openvino" in final and "SEGANY_CHECKPOINT" not in final
    assert "WEIGHTS" not in final and "USER" not in final
    assert "/opt/ml/model" not in cpu + cuda


def test_only_the_cpu_bake_leaves_torch_out(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    assert build.leaves_out_torch(BuildOptions(bake_weights=weights))
    assert build.slim_ref(BuildOptions(image="r/seg")) == "r/seg:cpu-slim"
    for kept in (BuildOptions(), BuildOptions(bake_weights=weights, keep_torch=True),
                 BuildOptions(device="cuda", bake_weights=weights)):
        assert not build.leaves_out_torch(kept) and Variant.of(kept).torch
    assert not Variant.of(BuildOptions(bake_weights=weights)).torch
    for pointless in (BuildOptions(keep_torch=True), BuildOptions(device="cuda", bake_weights=weights, keep_torch=True)):
        with pytest.raises(ConfigError, match="--keep-torch is for --device cpu with --bake-weights"):
            build.build(pointless)
    # the fixes a too-large cpu image is told: bake (no torch then), or drop --keep-torch
    fixes = {variant: " | ".join(by_target(check_image(11 * GB, variant))["SageMaker Serverless"].fixes)
             for variant in (Variant("cpu", False), Variant("cpu", True, torch=True), Variant("cpu", True, torch=False))}
    assert "--bake-weights converts it at build time" in fixes[Variant("cpu", False)]
    assert "drop --keep-torch" in fixes[Variant("cpu", True, torch=True)]
    assert "torch" not in fixes[Variant("cpu", True, torch=False)]


def test_model_type_of_baked_weights(tiny_checkpoint: Path) -> None:
    assert build.model_type_of(tiny_checkpoint) == "tiny"


def test_bentoml_build_prints_the_tag() -> None:
    assert build._bento_tag("noise\n__tag__:segment-anywhere:abc123\n") == "segment-anywhere:abc123"
    with pytest.raises(Exception, match="no bento tag"):
        build._bento_tag("Error")


def test_choose_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"docker", "buildah"}
    monkeypatch.setattr(build.shutil, "which", lambda name: f"/usr/bin/{name}" if name in installed else None)
    answers = {"docker": 1}
    monkeypatch.setattr(build.subprocess, "run", lambda command, **_: type("R", (), {"returncode": answers[command[0]]}))
    assert build.choose_backend(None) == "buildah"  # docker installed, daemon down
    answers["docker"] = 0
    assert build.choose_backend(None) == "docker"
    assert build.choose_backend("buildah") == "buildah"
    with pytest.raises(Exception, match="not on PATH"):
        build.choose_backend("podman")
    installed.clear()
    with pytest.raises(Exception, match="install docker, podman or buildah"):
        build.choose_backend(None)


# --- the base image and the in-image installer ------------------------------------------------


def test_debian_base_commands(tmp_path: Path) -> None:
    command = base_image.debootstrap_command(tmp_path / "rootfs")
    assert command[:2] == ["debootstrap", "--variant=minbase"]
    assert "--include=python3,python3-pip,python3-venv,ca-certificates,passwd" in command
    assert command[-3:] == ["bookworm", str(tmp_path / "rootfs"), "http://deb.debian.org/debian"]
    buildah = base_image.import_commands("buildah", tmp_path / "r.tar", "localhost/segany-base:bookworm")
    assert [c[1] for c in buildah] == ["from", "add", "config", "commit"] and buildah[0][-1] == "scratch"
    docker = base_image.import_commands("docker", tmp_path / "r.tar", "segany-base:bookworm")
    assert docker[0][:2] == ["docker", "import"] and docker[0][-1] == "segany-base:bookworm"
    assert base_image.image_ref("docker") == "segany-base:bookworm"
    assert base_image.image_ref("buildah") == "localhost/segany-base:bookworm"


def test_debian_base_trim_removes_externally_managed(tmp_path: Path) -> None:
    for path in ("usr/lib/python3.11/EXTERNALLY-MANAGED", "var/lib/apt/lists/x", "usr/share/doc/p/copyright",
                 "usr/share/doc/p/changelog.gz", "usr/share/man/man1/x.1", "usr/share/locale/de/x.mo",
                 "usr/share/locale/locale.alias", "usr/bin/python3"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    base_image.trim(tmp_path)
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {"usr/share/doc/p/copyright", "usr/share/locale/locale.alias", "usr/bin/python3"}


def test_installer_plan() -> None:
    assert install.override_lines({"SEGANY_DEVICE": "cpu"}) == ["triton ; sys_platform == 'never'"]
    assert install.override_lines({"SEGANY_DEVICE": "cuda"}) == []
    with pytest.raises(SystemExit):
        install.override_lines({"SEGANY_DEVICE": "tpu"})
    assert install.torch_preinstall({}) is None
    command = install.torch_preinstall({"SEGANY_TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"})
    assert command[:3] == ["uv", "pip", "install"] and command[-2:] == ["torch", "torchvision"]
    assert command[command.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    freeze = "numpy==2.4.6\ntorch==2.14.1+cpu\ntorchvision==0.29.1+cpu\ntorchaudio==2.14.1\n"
    pins = install.pins_from_freeze(freeze)
    assert pins == ["torch==2.14.1+cpu", "torchvision==0.29.1+cpu"]
    assert install.pin_installed(["torch==2.14.1", "numpy<3"], pins) == ["numpy<3", *pins]
    import tomllib

    assert list(install.BUILD_REQUIRES) == tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    # SEGANY_TORCH=0: torch, torchvision and segment-anything dropped everywhere (cpu only), no torch index used
    without = install.override_lines({"SEGANY_DEVICE": "cpu", "SEGANY_TORCH": "0"})
    assert [line.split(" ;")[0] for line in without] == ["triton", "torch", "torchvision", "segment-anything"]
    assert install.torch_preinstall({"SEGANY_TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu", "SEGANY_TORCH": "0"}) is None
    assert install.override_lines({"SEGANY_TORCH": "1"}) == install.override_lines({})
    for wrong in ({"SEGANY_DEVICE": "cuda", "SEGANY_TORCH": "0"}, {"SEGANY_TORCH": "no"}):
        with pytest.raises(SystemExit):
            install.override_lines(wrong)


def test_dockerfile_template_contract() -> None:
    """What the platforms rely on, in the template itself (the OCI test runs the result)."""
    text = (ROOT / "deploy/image/Dockerfile.j2").read_text()
    assert 'ENTRYPOINT ["segany", "entrypoint"]' in text and "CMD []" in text
    assert "EXPOSE 8080" in text and "USER {{ bento__uid_gid }}:{{ bento__uid_gid }}" in text
    for variable in ("HOME=/tmp", "BENTOML_HOME=/tmp/bentoml", "SEGANY_CACHE_DIR=/tmp/segment-anywhere"):
        assert variable in text
    # The build's CA only ever arrives as a mounted secret: never copied, never an ENV of the image.
    assert "--mount=type=secret,id=segany-ca" in text
    assert not any(line.startswith(("ENV", "COPY", "ADD")) and ("SSL_CERT" in line or "segany-ca" in line)
                   for line in text.splitlines())
    bentofile = (ROOT / "bentofile.yaml").read_text()
    assert 'dockerfile_template: "deploy/image/Dockerfile.j2"' in bentofile
    # what the image carries, labelled from its build arguments (a bake adds the model's)
    assert ('LABEL io.segment-anywhere.device="${SEGANY_DEVICE}" io.segment-anywhere.torch="${SEGANY_TORCH}" '
            'io.segment-anywhere.weights="none"') in text
    # the dependencies' layers come before the code's, so that a code-only release rebuilds only the code's
    assert text.index("python3 ./env/docker/segany_install.py") < text.index("\nCOPY . ./\n") < text.index("install -q --no-deps")


# --- inspect and archive -----------------------------------------------------------------------


def test_image_info_from_each_backend() -> None:
    manifest = {"layers": [{"size": 100}, {"size": 23}]}
    buildah = image_info("buildah", "r", {"Manifest": json.dumps(manifest), "FromImageID": "abc",
                                          "FromImageDigest": "sha256:def"})
    assert (buildah.image_id, buildah.digest, buildah.size_bytes) == ("sha256:abc", "sha256:def", 123)
    docker = image_info("docker", "r", [{"Id": "sha256:1", "Size": 5, "RepoDigests": ["reg/x@sha256:2"]}])
    assert (docker.image_id, docker.digest, docker.size_bytes) == ("sha256:1", "sha256:2", 5)
    assert image_info("docker", "r", [{"Id": "sha256:1", "Size": 5, "RepoDigests": []}]).digest is None


def test_export_commands(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    assert export_command("buildah", "localhost/segment-anywhere:cpu", archive) == [
        "buildah", "push", "localhost/segment-anywhere:cpu", f"oci-archive:{archive}:segment-anywhere:cpu"]
    assert export_command("podman", "x:1", archive)[:4] == ["podman", "save", "--format", "oci-archive"]
    assert export_command("docker", "x:1", archive)[:3] == ["skopeo", "copy", "docker-daemon:x:1"]


def test_archive_manifest(tmp_path: Path) -> None:
    manifest = json.dumps({"config": {"size": 7}, "layers": [{"size": 10}, {"size": 20}]}).encode()
    index = json.dumps({"manifests": [{"digest": "sha256:feed"}]}).encode()
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("index.json", index), ("blobs/sha256/feed", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert archive_manifest(archive) == ("sha256:feed", 37)


# --- the command line --------------------------------------------------------------------------


def test_cli_build_passes_options_and_prints_the_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from deploy import cli
    from deploy.oci import ImageInfo

    seen: list[BuildOptions] = []

    def fake_build(options: BuildOptions) -> build.BuildResult:
        seen.append(options)
        variant = Variant(options.device, False, options.torch_index_url)
        image = ImageInfo("localhost/segment-anywhere:cpu", "sha256:1", "sha256:2", int(5.5 * GB))
        return build.BuildResult(image, variant, "localhost/segany-base:bookworm", check_image(image.size_bytes, variant))

    monkeypatch.setattr(build, "build", fake_build)
    result = CliRunner().invoke(cli.main, ["build", "--backend", "buildah", "--base", "debian", "--no-pin",
                                           "--constraint", "numpy<3", "--project", str(ROOT)])
    assert result.exit_code == 0, result.output
    options = seen[0]
    assert (options.backend, options.base, options.pin, options.constraints) == ("buildah", "debian", False, ("numpy<3",))
    assert options.platform == "linux/amd64" and options.device == "cpu" and options.bake_weights is None
    assert "image   localhost/segment-anywhere:cpu" in result.output and "5.50 GB" in result.output
    assert "[WARN] Cloud Run" in result.output and "--torch-index-url" in result.output
