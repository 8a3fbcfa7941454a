"""Pushes to a real registry send only the layers it lacks (``make test-registry``; marker ``registry``).

Small OCI images written here (tests/test_registry_units.py: three layers of a few MB, the top
one different between v1 and v2) are pushed with deploy/registry.py (skopeo) to Debian's
``docker-registry`` on 127.0.0.1; what the registry received is read off its storage (the blobs
it gained) and its access log (the uploads it finished). Needs skopeo and docker-registry
(``apt-get install skopeo docker-registry``); the local-storage case needs root as well.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from bench.push import LocalRegistry
from deploy.registry import PushPlan, RegistryAuth, plan_push, push
from runners.errors import ConfigError
from tests.test_registry_units import random_layer, write_oci_archive

pytestmark = pytest.mark.registry

TOOLS = ("skopeo", "docker-registry")
MB = 1 << 20
LABELS = {"io.segment-anywhere.device": "cpu", "io.segment-anywhere.model": "tiny",
          "io.segment-anywhere.weights": "converted", "io.segment-anywhere.torch": "0", "io.segment-anywhere.version": "0.1.0"}
USER, PASSWORD = "segany", "Corr3ct-h0rse"

_missing = [tool for tool in TOOLS if shutil.which(tool) is None]
if _missing:
    pytest.skip(f"the registry tests need {', '.join(TOOLS)}; missing: {', '.join(_missing)} "
                "(apt-get install skopeo docker-registry, or make test-registry)", allow_module_level=True)


@dataclasses.dataclass
class Images:
    v1: Path
    v2: Path
    m1: dict  # the manifests, with their "digest"
    m2: dict


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """base 4 MB, dependencies 3 MB, code 1 MB; v2 changes the code layer only."""
    folder = tmp_path_factory.mktemp("images")
    base, deps = random_layer(1, 4 * MB), random_layer(2, 3 * MB)
    m1 = write_oci_archive(folder / "v1.tar", [base, deps, random_layer(3, MB)], LABELS)
    m2 = write_oci_archive(folder / "v2.tar", [base, deps, random_layer(4, MB)], LABELS)
    return Images(folder / "v1.tar", folder / "v2.tar", m1, m2)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(tmp_path / "registry") as local:
        yield local


def _push(local: LocalRegistry, plan: PushPlan, **kwargs: object) -> tuple[str, dict[str, int], set[str]]:
    """Push; (the pushed digest, the blobs the registry gained, the uploads its log says it finished)."""
    before, log_before = local.blobs(), len(local.log())
    result = push(plan, progress=kwargs.get("progress", False))
    received = {digest: size for digest, size in local.blobs().items() if digest not in before}
    assert result.bytes_sent == plan.bytes_to_send
    return result.digest, received, local.uploads(log_before)


def _blobs(manifest: dict, *layers: int) -> set[str]:
    return {manifest["layers"][i]["digest"] for i in layers}


def test_second_push_sends_only_the_changed_layer(registry: LocalRegistry, images: Images) -> None:
    dest = f"docker://{registry.host}/segany"
    first = plan_push(f"oci-archive:{images.v1}:test", f"{dest}:v1", None, tls_verify=False)
    assert not first.repository_exists and first.bytes_to_send == first.bytes_total > 8 * MB
    assert first.labels == LABELS and first.manifest_digest == images.m1["digest"]
    digest, received, uploads = _push(registry, first)
    assert digest == images.m1["digest"]  # an archive's blobs go as they are: the manifest keeps its digest
    config1 = images.m1["config"]["digest"]
    assert set(received) == _blobs(images.m1, 0, 1, 2) | {config1, digest}
    assert sum(size for blob, size in received.items() if blob != digest) == first.bytes_total
    assert uploads == _blobs(images.m1, 0, 1, 2) | {config1}

    second = plan_push(f"oci-archive:{images.v2}", f"{dest}:v2", None, tls_verify=False)
    assert [layer.present for layer in second.layers] == [True, True, False] and not second.config.present
    changed, config2 = images.m2["layers"][2], images.m2["config"]
    assert second.bytes_to_send == changed["size"] + config2["size"] < second.bytes_total * 0.15
    digest, received, uploads = _push(registry, second)
    assert set(received) == {changed["digest"], config2["digest"], digest} and uploads == {changed["digest"], config2["digest"]}

    again = plan_push(f"oci-archive:{images.v2}", f"{dest}:v2", None, tls_verify=False)
    assert again.bytes_to_send == 0 and all(layer.present for layer in again.layers)
    from rich.console import Console
    from rich.progress import Progress

    drawn = io.StringIO()
    with Progress(console=Console(file=drawn, force_terminal=False, width=200)) as progress:
        digest_again, received, uploads = _push(registry, again, progress=progress)
    assert digest_again == digest and received == {} and uploads == set()
    assert "0 of 3 layers to send" in drawn.getvalue()


def test_plan_against_a_repository_that_does_not_exist(registry: LocalRegistry, images: Images) -> None:
    plan = plan_push(f"oci-archive:{images.v1}", f"{registry.host}/nothing/here:1", None, tls_verify=False)
    assert not plan.repository_exists and not plan.config.present and not any(layer.present for layer in plan.layers)
    assert plan.bytes_to_send == plan.bytes_total


def test_credentials_go_by_authfile_and_a_wrong_password_names_the_fix(tmp_path: Path, images: Images) -> None:
    with warnings.catch_warnings():  # bcrypt, which docker-registry's htpasswd needs, from libc (crypt: Python <= 3.12)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            pytest.skip("no crypt module (Python 3.13+) to write the registry's bcrypt htpasswd")
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: fast to check
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("this libc's crypt has no bcrypt, which docker-registry's htpasswd needs")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"{USER}:{hashed}\n")
    with LocalRegistry(tmp_path / "registry", htpasswd) as local:
        dest = f"docker://{local.host}/segany:v1"
        right = RegistryAuth(local.host, USER, PASSWORD)
        plan = plan_push(f"oci-archive:{images.v1}", dest, right, tls_verify=False)
        assert plan.bytes_to_send == plan.bytes_total
        wrong = RegistryAuth(local.host, USER, "Wr0ng-" + PASSWORD)
        with pytest.raises(ConfigError) as refused:
            plan_push(f"oci-archive:{images.v1}", dest, wrong, tls_verify=False)
        with pytest.raises(ConfigError) as refused_push:  # skopeo itself, handed the wrong password
            push(dataclasses.replace(plan, auth=wrong), progress=False)
        for error in (refused.value, refused_push.value):
            assert "refused the credentials" in error.message and "get-login-password" in error.message
            assert PASSWORD not in error.message
        digest, received, _ = _push(local, plan)
        assert digest == images.m1["digest"] and len(received) == 5
        assert PASSWORD not in local.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="containers-storage needs root")
def test_push_from_local_storage(registry: LocalRegistry, images: Images) -> None:
    """What `segany build` leaves (layers uncompressed, under other digests than the registry's):
    the plan matches them by diff_id, and skopeo sends only the changed one."""
    refs = {version: f"localhost/segany-registry-test:{version}" for version in ("v1", "v2")}
    try:
        for version, archive in (("v1", images.v1), ("v2", images.v2)):
            subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{archive}", f"containers-storage:{refs[version]}"],
                           check=True, capture_output=True)
        dest = f"docker://{registry.host}/segany"
        first = plan_push(f"containers-storage:{refs['v1']}", f"{dest}:v1", None, tls_verify=False)
        assert first.bytes_to_send == first.bytes_total
        _push(registry, first)
        second = plan_push(f"containers-storage:{refs['v2']}", f"{dest}:v2", None, tls_verify=False)
        assert [layer.present for layer in second.layers] == [True, True, False]
        assert second.labels == LABELS
        _, received, uploads = _push(registry, second)
        layers = {digest: size for digest, size in received.items() if digest in uploads}
        assert len(uploads) == 2 and len(received) == 3  # the changed layer, the config; and the manifest
        assert sum(layers.values()) < 1.1 * MB < second.bytes_total / 7
    finally:
        for ref in refs.values():
            subprocess.run(["skopeo", "delete", f"containers-storage:{ref}"], capture_output=True)


def test_both_deploy_commands_push_only_missing_layers(registry: LocalRegistry, images: Images, moto_aws, fake_cloudrun,
                                                      monkeypatch) -> None:
    """`segany deploy aws` and `segany deploy gcp` with a local image push it through the same code
    (deploy/registry.py) and point their model / revision at the pushed tag; a second release that
    changes only the code layer sends that layer and the config, nothing more."""
    from click.testing import CliRunner

    from deploy.cli import main

    def deploy(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    aws = ("deploy", "aws", "--mode", "serverless", "--endpoint", "sam", "--registry", registry.host,
           "--role-arn", "arn:aws:iam::123456789012:role/r", "--poll-s", "1")
    deploy(*aws, "--oci-archive", str(images.v1))
    first = set(registry.blobs())
    assert first >= {layer["digest"] for layer in images.m1["layers"]}
    image = moto_aws.client("sagemaker").describe_model(ModelName=next(
        m["ModelName"] for m in moto_aws.client("sagemaker").list_models()["Models"]))["PrimaryContainer"]["Image"]
    assert image == f"{registry.host}/segment-anywhere:sha-{images.m1['digest'].split(':')[1][:12]}"
    deploy(*aws, "--oci-archive", str(images.v2))
    sent = set(registry.blobs()) - first
    assert sent == {images.m2["layers"][-1]["digest"], images.m2["config"]["digest"], images.m2["digest"]}  # + the manifest

    monkeypatch.setenv("SEGANY_CLOUD_RUN_ENDPOINT", fake_cloudrun.endpoint)
    before = set(registry.blobs())
    out = deploy("deploy", "gcp", "--project", fake_cloudrun.project, "--region", fake_cloudrun.region, "--service", "sam",
                 "--registry", registry.host, "--oci-archive", str(images.v2))
    assert set(registry.blobs()) == before  # Artifact Registry's stand-in already holds every layer
    template = fake_cloudrun.services[f"{fake_cloudrun.parent}/services/sam"]["template"]
    assert template["containers"][0]["image"].startswith(f"{registry.host}/segment-anywhere:sha-") and "deployed" in out


def test_destroy_gcp_deletes_the_images_only_when_asked(registry: LocalRegistry, images: Images, fake_cloudrun,
                                                       monkeypatch) -> None:
    from click.testing import CliRunner

    from deploy.cli import main

    def segany(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    monkeypatch.setenv("SEGANY_CLOUD_RUN_ENDPOINT", fake_cloudrun.endpoint)
    where = ("--project", fake_cloudrun.project, "--region", fake_cloudrun.region, "--service", "sam")
    segany("deploy", "gcp", *where, "--registry", registry.host, "--oci-archive", str(images.v1))
    image = fake_cloudrun.services[f"{fake_cloudrun.parent}/services/sam"]["template"]["containers"][0]["image"]
    manifest = f"http://{registry.host}/v2/segment-anywhere/manifests/{image.rsplit(':', 1)[1]}"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    assert httpx.get(manifest, headers=accept).status_code == 200
    out = segany("destroy", "gcp", *where, "--delete-images", "--dry-run")
    assert "registry.delete_image" in out and image in out
    assert httpx.get(manifest, headers=accept).status_code == 200
    segany("deploy", "gcp", *where, "--registry", registry.host, "--oci-archive", str(images.v1))
    out = segany("destroy", "gcp", *where, "--delete-images")
    assert "and 1 image(s)" in out and httpx.get(manifest, headers=accept).status_code == 404
