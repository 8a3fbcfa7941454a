"""The image itself honours both contracts (``make test-oci``; marker ``oci``).

Builds the CPU image with the tiny checkpoint baked in, exactly as a user would
(``segany build --backend buildah --bake-weights tiny.pth --oci-archive ...``), copies the OCI
archive with skopeo, unpacks it with umoci, and runs the unpacked image as a container
runtime would (deploy/image/run_rootfs.py): PID 1 of its own PID namespace, the image's
entrypoint, environment, working directory and non-root user, a read-only root with a tmpfs
on /tmp. Against the running image: SageMaker (``IMAGE serve``, on SAGEMAKER_BIND_TO_PORT
and on the default 8080) and Cloud Run (no arguments, $PORT) pass the shared contract
checks, and SIGTERM ends the container with status 0.

Needs buildah, skopeo and umoci (skipped without them), root (mounts, chroot; debootstrap
when no registry serves the Python base), and about 25 GB of disk with the vfs driver. The
CA bundle in SSL_CERT_FILE, if set, is handed to the build as a secret.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from bench.server import free_port, libraries_mapped
from tests import contract_checks as checks

pytestmark = pytest.mark.oci

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "deploy" / "image" / "run_rootfs.py"
TOOLS = ("buildah", "skopeo", "umoci")
IMAGE = "localhost/segany-oci-test"
SHUTDOWN_WAIT_S = 40  # SEGANY_SHUTDOWN_GRACE_S (10) plus the model's teardown, with room

_missing = [tool for tool in TOOLS if shutil.which(tool) is None]
if _missing:
    pytest.skip(f"the OCI test needs {', '.join(TOOLS)}; missing: {', '.join(_missing)} "
                "(apt-get install buildah skopeo umoci)", allow_module_level=True)


@dataclass
class BuiltImage:
    report: str
    rootfs: Path
    config: dict  # the OCI image config: architecture, config.Env/Entrypoint/Cmd/User/WorkingDir
    archive: Path

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["config"]["Env"])


@pytest.fixture(scope="module")
def image(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    if os.geteuid() != 0:
        pytest.fail("the OCI test runs the image with mounts and chroot: run it as root")
    work = tmp_path_factory.mktemp("oci")
    archive, layout, bundle = work / "segany.tar", work / "layout", work / "bundle"
    weights = work / "tiny.pth"
    shutil.copyfile(tiny_checkpoint, weights)
    command = [sys.executable, "-m", "deploy.cli", "build", "--backend", "buildah", "--device", "cpu",
               "--bake-weights", str(weights), "--image", IMAGE, "--oci-archive", str(archive),
               "--base", os.environ.get("SEGANY_OCI_BASE", "auto"), "--project", str(ROOT)]
    if os.environ.get("SSL_CERT_FILE"):
        command += ["--ca-bundle", os.environ["SSL_CERT_FILE"]]
    env = dict(os.environ, BENTOML_HOME=str(work / "bentoml"), COLUMNS="200")
    try:
        build = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert build.returncode == 0, build.stdout[-6000:]
        # skopeo reads the archive as any registry push would, into an OCI layout umoci unpacks.
        subprocess.run(["skopeo", "copy", f"oci-archive:{archive}", f"oci:{layout}:test"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:test", str(bundle)], check=True,
                       stdout=subprocess.DEVNULL)
        yield BuiltImage(build.stdout, bundle / "rootfs", _image_config(layout), archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gigabytes: do not leave them to pytest's basetemp rotation
        for tag in ("cpu", "cpu-slim", "cpu-tiny"):
            subprocess.run(["buildah", "rmi", f"{IMAGE}:{tag}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _image_config(layout: Path) -> dict:
    def blob(digest: str) -> dict:
        algorithm, value = digest.split(":", 1)
        return json.loads((layout / "blobs" / algorithm / value).read_text())

    index = json.loads((layout / "index.json").read_text())
    return blob(blob(index["manifests"][0]["digest"])["config"]["digest"])


class Container:
    """The unpacked image running as PID 1 of its own PID namespace (deploy/image/run_rootfs.py)."""

    def __init__(self, image: BuiltImage, args: list[str], env: dict[str, str], log: Path) -> None:
        config = image.config["config"]
        uid, _, gid = config["User"].partition(":")
        self.spec = {"rootfs": str(image.rootfs), "args": config["Entrypoint"] + (config.get("Cmd") or []) + args,
                     "env": {**image.env, **env}, "cwd": config.get("WorkingDir") or "/",
                     "uid": int(uid), "gid": int(gid or uid), "read_only": True}
        self.log = log
        spec_path = log.with_suffix(".json")
        spec_path.write_text(json.dumps(self.spec))
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--", sys.executable, str(RUNNER),
             str(spec_path)], stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def pid1(self) -> int:
        """The container's PID 1, as the host sees it: the child unshare forked."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            if children:
                return int(children[0])
            time.sleep(0.05)
        raise AssertionError("the container's PID 1 did not start")

    def uid(self) -> int:
        status = Path(f"/proc/{self.pid1()}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])

    def terminate(self) -> int:
        """SIGTERM to PID 1, as `docker stop`, SageMaker and Cloud Run send it; the exit status."""
        os.kill(self.pid1(), signal.SIGTERM)
        return self.process.wait(timeout=SHUTDOWN_WAIT_S)

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.pid1(), signal.SIGKILL)
            except (OSError, AssertionError):
                pass
            self.process.kill()
            self.process.wait(timeout=30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_ready(url: str, container: Container, path: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert container.process.poll() is None, f"the container exited:\n{container.text()[-4000:]}"
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered 200:\n{container.text()[-4000:]}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# --- the image's metadata ----------------------------------------------------------------------


def test_build_reports_reference_digest_size_and_limits(image: BuiltImage) -> None:
    report = image.report
    assert f"image   {IMAGE}:cpu-tiny" in report
    assert "digest  sha256:" in report and "uncompressed" in report and "archive " in report
    assert "SageMaker Serverless" in report and "Cloud Run" in report
    assert "no torch in the image" in report and f"without torch   {IMAGE}:cpu-slim" in report


def test_the_baked_cpu_image_carries_no_torch(image: BuiltImage) -> None:
    """Built on the image without torch (SEGANY_TORCH=0): no torch, torchvision, segment_anything or
    nvidia-* libraries in it; the image with torch, which converted the model, is at least 1 GB larger
    (PyPI's torch is 1.2 GB and its CUDA libraries 3.4 GB; CPU-only wheels 0.7 GB)."""
    site = next((image.rootfs / "app/.venv/lib").glob("python3*/site-packages"))
    for package in ("torch", "torchvision", "segment_anything", "nvidia", "triton"):
        assert not (site / package).exists(), package
    assert (site / "openvino").is_dir() and (site / "bentoml").is_dir()
    sizes = {line.split()[2].rstrip(":"): float(line.split()[3]) for line in image.report.splitlines()
             if line.startswith(("without weights", "without torch"))}
    final = float(next(line.split()[1] for line in image.report.splitlines() if line.startswith("size")))
    assert final < sizes[f"{IMAGE}:cpu"] - 1.0 and final < sizes[f"{IMAGE}:cpu-slim"] + 0.1, (final, sizes)


def test_image_config_is_the_contract(image: BuiltImage) -> None:
    config = image.config["config"]
    assert image.config["architecture"] == "amd64" and image.config["os"] == "linux"
    assert config["Entrypoint"] == ["segany", "entrypoint"] and not config.get("Cmd")
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["User"] == "1034:1034"
    env = image.env
    assert env["HOME"] == "/tmp" and env["BENTOML_HOME"].startswith("/tmp/") and env["SEGANY_CACHE_DIR"].startswith("/tmp/")
    assert env["SEGANY_MODEL"] == "tiny" and "SEGANY_CHECKPOINT" not in env
    assert env["SEGANY_OPENVINO_DIR"] == "/opt/segany/openvino"  # converted at build time, in place of the weights
    for name in ("image_encoder", "prompt_decoder", "mask_decoder"):
        assert (image.rootfs / f"opt/segany/openvino/{name}.xml").is_file()
    manifest = json.loads((image.rootfs / "opt/segany/openvino/manifest.json").read_text())
    assert manifest["model_type"] == "tiny" and len(manifest["checkpoint_sha256"]) == 64
    # the checkpoint stayed in the build stage: no .pth anywhere in the image, nothing left in /tmp
    assert not (image.rootfs / "opt/segany/weights").exists()
    assert not list((image.rootfs / "opt").rglob("*.pth")) and not list((image.rootfs / "tmp").iterdir())
    assert not any(key in env for key in ("SSL_CERT_FILE", "PIP_CERT", "SEGANY_TORCH_INDEX_URL"))


def test_build_ca_bundle_is_not_in_the_image(image: BuiltImage) -> None:
    """The CA handed to the build (a secret) leaves no file, and the image trusts exactly the
    certificates its own ca-certificates package ships."""
    secrets = image.rootfs / "run/secrets"  # the secret's mount point may be left, empty
    assert not secrets.exists() or not any(path.is_file() and path.stat().st_size for path in secrets.rglob("*"))
    bundle = image.rootfs / "etc/ssl/certs/ca-certificates.crt"
    shipped = {_pem(path.read_text()) for path in (image.rootfs / "usr/share/ca-certificates").rglob("*.crt")}
    trusted = {_pem(block) for block in bundle.read_text().split("-----END CERTIFICATE-----") if "BEGIN" in block}
    assert shipped and trusted <= shipped, f"{len(trusted - shipped)} certificates in the image's trust store come from elsewhere"


def _pem(text: str) -> str:
    body = text.split("-----BEGIN CERTIFICATE-----", 1)[-1].split("-----END CERTIFICATE-----", 1)[0]
    return "".join(body.split())


# --- the running image -------------------------------------------------------------------------


@pytest.mark.parametrize("port_source", ["SAGEMAKER_BIND_TO_PORT", "default 8080"])
def test_sagemaker_contract(image: BuiltImage, tmp_path: Path, port_source: str) -> None:
    """`IMAGE serve`: /ping and /invocations on 8080 or SAGEMAKER_BIND_TO_PORT; SIGTERM exits 0."""
    if port_source == "default 8080":
        if not _port_free(8080):
            pytest.skip("port 8080 is in use on this machine; the SAGEMAKER_BIND_TO_PORT case covers serve mode")
        port, env = 8080, {}
    else:
        port = free_port()
        env = {"SAGEMAKER_BIND_TO_PORT": str(port)}
    container = Container(image, ["serve"], {**env, "SEGANY_DEVICE": "cpu"}, tmp_path / "sagemaker.log")
    url = f"http://127.0.0.1:{port}"
    try:
        statuses = checks.wait_for_ping(url)
        assert statuses[-1] == 200
        assert container.uid() == 1034, "the server must run as the image's non-root user"
        checks.check_invocations_json(url)
        checks.check_invocations_raw_image(url)
        checks.check_health(url)
        checks.check_segment(url)
        # the baked conversion alone: no checkpoint resolved, generated or downloaded, nothing converted
        assert "converted from /opt/segany/openvino/manifest.json" in container.text()
        assert "openvino encoder" in container.text() and "converting" not in container.text()
        assert ".pth" not in container.text()
        assert "no torch)" in container.text()  # the torch-free engine (runners/converted_engine.py)
        # ... which served those segment-everything requests too (runners/mask_generator.py)
        assert libraries_mapped(container.pid1(), "libopenvino") and not libraries_mapped(container.pid1(), "libtorch")
        assert container.terminate() == 0, container.text()[-4000:]
    finally:
        container.kill()


def test_cloud_run_contract(image: BuiltImage, tmp_path: Path) -> None:
    """No arguments: $PORT, JSON logs under K_SERVICE; SIGTERM exits 0."""
    port = free_port()
    env = {"PORT": str(port), "K_SERVICE": "segany", "K_REVISION": "segany-00001", "GOOGLE_CLOUD_PROJECT": "segany-test",
           "SEGANY_DEVICE": "cpu"}
    container = Container(image, [], env, tmp_path / "cloudrun.log")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, container, "/readyz")
        assert container.uid() == 1034
        checks.check_health(url)
        body = checks.check_segment(url)
        assert body["image_id"]
        assert httpx.post(f"{url}/invocations", json={}, timeout=30).status_code == 404  # SageMaker's routes are not here
        json_lines = [line for line in container.text().splitlines() if line.startswith("{")]
        assert json_lines and all("severity" in json.loads(line) for line in json_lines[-3:])
        assert container.terminate() == 0, container.text()[-4000:]
    finally:
        container.kill()
