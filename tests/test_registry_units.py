"""deploy/registry.py without tools or a registry: auth, the token flow, the authfile, the plan
against a fake registry (httpx.MockTransport), the push commands. ``write_oci_archive`` makes
small OCI images for these and for tests/test_registry_push.py."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import stat
import tarfile
from pathlib import Path
from typing import Callable

import httpx
import pytest

from deploy import registry
from deploy.image_labels import LABELS, baked_model, bake_labels, carried
from deploy.registry import PushPlan, RegistryAuth, plan_push
from runners.errors import ConfigError

PASSWORD = "s3cret-Pa55word"
HOST = "registry.example.com"


# --- small OCI images --------------------------------------------------------------------------


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def random_layer(seed: int, size: int) -> bytes:
    """A layer of ``size`` incompressible bytes: gzip leaves it about as large."""
    return layer_tar({f"data/{seed}.bin": random.Random(seed).randbytes(size)})


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_blobs(layers: list[bytes], labels: dict[str, str]) -> tuple[dict[str, bytes], dict, bytes]:
    """(digest -> blob, the manifest, its bytes): gzip layers, a config naming their diff_ids."""
    compressed = [gzip.compress(layer, mtime=0) for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(layer) for layer in layers]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(blob), "size": len(blob)}
                           for blob in compressed]}
    raw = json.dumps(manifest).encode()
    blobs = {_digest(blob): blob for blob in [config, *compressed, raw]}
    return blobs, manifest, raw


def write_oci_archive(path: Path, layers: list[bytes], labels: dict[str, str], name: str = "test") -> dict:
    """An OCI archive (what ``segany build --oci-archive`` writes) of one image; returns its manifest."""
    blobs, manifest, raw = oci_blobs(layers, labels)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"], "digest": _digest(raw), "size": len(raw),
                                                "annotations": {"org.opencontainers.image.ref.name": name}}]}
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode(),
             **{f"blobs/sha256/{digest.split(':')[1]}": blob for digest, blob in blobs.items()}}
    path.write_bytes(layer_tar(files))
    return {**manifest, "digest": _digest(raw)}


# --- a fake registry ---------------------------------------------------------------------------


class FakeRegistry:
    """Blobs by digest, tags -> manifests; auth: None, "basic" or "bearer" (token from user:PASSWORD)."""

    def __init__(self, auth: str | None = None, user: str = "AWS") -> None:
        self.auth, self.user = auth, user
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []

    def holds(self, blobs: dict[str, bytes], manifest: bytes, tag: str) -> None:
        self.blobs.update(blobs)
        self.tags[tag] = manifest

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        basic = "Basic " + base64.b64encode(f"{self.user}:{PASSWORD}".encode()).decode()
        if request.url.host == "auth.example.com":
            ok = request.headers.get("authorization") == basic
            return httpx.Response(200, json={"token": "tok-1"}) if ok else httpx.Response(401, json={"errors": []})
        expected = {"basic": basic, "bearer": "Bearer tok-1"}.get(self.auth or "")
        if expected and request.headers.get("authorization") != expected:
            challenge = ('Basic realm="test"' if self.auth == "basic" else
                         'Bearer realm="https://auth.example.com/token",service="reg.example",scope="repository:segany:pull"')
            return httpx.Response(401, headers={"www-authenticate": challenge})
        path = request.url.path.removeprefix("/v2/segany/")
        if not self.tags and not self.blobs:
            return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})
        if path == "tags/list":
            return httpx.Response(200, json={"name": "segany", "tags": sorted(self.tags)})
        kind, _, ref = path.partition("/")
        data = self.tags.get(ref) or self.blobs.get(ref) if kind == "manifests" else self.blobs.get(ref)
        if data is None:
            return httpx.Response(404)
        return httpx.Response(200, content=b"" if request.method == "HEAD" else data)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeRegistry]:
    real_client = httpx.Client

    def make(auth: str | None = None) -> FakeRegistry:
        fake_registry = FakeRegistry(auth)
        monkeypatch.setattr(registry.httpx, "Client",
                            lambda **kwargs: real_client(transport=httpx.MockTransport(fake_registry.handler), **kwargs))
        return fake_registry

    return make


def _two_versions(tmp_path: Path) -> tuple[Path, dict, Path, dict]:
    labels = {"io.segment-anywhere.device": "cpu", "io.segment-anywhere.model": "tiny"}
    base, deps = random_layer(1, 30_000), random_layer(2, 20_000)
    v1 = write_oci_archive(tmp_path / "v1.tar", [base, deps, random_layer(3, 5_000)], labels)
    v2 = write_oci_archive(tmp_path / "v2.tar", [base, deps, random_layer(4, 5_000)], labels)
    return tmp_path / "v1.tar", v1, tmp_path / "v2.tar", v2


# --- auth --------------------------------------------------------------------------------------


def test_auth_repr_hides_the_password() -> None:
    auth = RegistryAuth(HOST, "AWS", PASSWORD)
    assert PASSWORD not in repr(auth) and PASSWORD not in str(auth) and "AWS" in repr(auth)
    plan = PushPlan("oci-archive:x", f"docker://{HOST}/segany:1", auth, True, "sha256:1",
                    registry.Blob("sha256:c", 1, False), (), {}, False)
    assert PASSWORD not in repr(plan)


def test_basic_header_and_challenge_parsing() -> None:
    assert registry.basic_header(RegistryAuth(HOST, "AWS", "pw")) == "Basic " + base64.b64encode(b"AWS:pw").decode()
    scheme, params = registry.parse_challenge(
        'Bearer realm="https://europe-docker.pkg.dev/v2/token",service="europe-docker.pkg.dev",scope="repository:p/r/segany:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://europe-docker.pkg.dev/v2/token", "service": "europe-docker.pkg.dev",
                      "scope": "repository:p/r/segany:pull,push"}  # the comma inside quotes stays
    assert registry.parse_challenge('Basic realm="https://1.dkr.ecr.eu-west-1.amazonaws.com/",service="ecr.amazonaws.com"') == (
        "basic", {"realm": "https://1.dkr.ecr.eu-west-1.amazonaws.com/", "service": "ecr.amazonaws.com"})
    assert registry.parse_challenge("") == ("", {})


def test_token_request_and_response() -> None:
    realm, query = registry.token_request({"realm": "https://auth/token", "service": "reg"}, "repository:segany:pull")
    assert realm == "https://auth/token" and query == {"service": "reg", "scope": "repository:segany:pull"}
    assert registry.token_request({"realm": "r", "scope": "repository:x:push"}, "ignored")[1] == {"scope": "repository:x:push"}
    with pytest.raises(ConfigError, match="no realm"):
        registry.token_request({"service": "reg"}, "s")
    assert registry.token_from_response({"token": "a"}) == "a"
    assert registry.token_from_response({"access_token": "b"}) == "b"
    with pytest.raises(ConfigError, match="oauth2accesstoken"):
        registry.token_from_response({})


def test_authfile_mode_and_content(tmp_path: Path) -> None:
    path = registry.write_authfile(RegistryAuth(HOST, "oauth2accesstoken", PASSWORD), tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auth = json.loads(path.read_text())["auths"][HOST]["auth"]
    assert base64.b64decode(auth).decode() == f"oauth2accesstoken:{PASSWORD}"
    with pytest.raises(FileExistsError):  # never written over (nor followed through a planted link)
        registry.write_authfile(RegistryAuth(HOST, "u", "p"), tmp_path)


def test_scrub_removes_the_password_and_its_encoding() -> None:
    auth = RegistryAuth(HOST, "AWS", PASSWORD)
    encoded = base64.b64encode(f"AWS:{PASSWORD}".encode()).decode()
    assert registry.scrub(f"x {PASSWORD} y {encoded}", auth) == "x *** y ***"


def test_parse_dest() -> None:
    assert registry.parse_dest("docker://1.dkr.ecr.eu-west-1.amazonaws.com/segany:1.2") == (
        "1.dkr.ecr.eu-west-1.amazonaws.com", "segany", "1.2")
    assert registry.parse_dest("europe-docker.pkg.dev/p/repo/segany") == ("europe-docker.pkg.dev", "p/repo/segany", "latest")
    assert registry.parse_dest("127.0.0.1:5000/a/b@sha256:ab") == ("127.0.0.1:5000", "a/b", "sha256:ab")
    with pytest.raises(ConfigError, match="HOST/NAME:TAG"):
        registry.parse_dest("segany:1")


# --- the commands ------------------------------------------------------------------------------


def _plan(source: str, tls_verify: bool = True) -> PushPlan:
    return PushPlan(source, "docker://127.0.0.1:5000/segany:2", RegistryAuth("127.0.0.1:5000", "u", PASSWORD),
                    tls_verify, "sha256:m", registry.Blob("sha256:c", 10, False), (), {}, True)


def test_push_commands_never_carry_the_password(tmp_path: Path) -> None:
    authfile, digestfile = tmp_path / "config.json", tmp_path / "digest"
    skopeo = registry.push_command("skopeo", _plan("oci-archive:/a.tar:segany", tls_verify=False), authfile, digestfile)
    assert skopeo == [["skopeo", "copy", "--retry-times", "2", "--digestfile", str(digestfile), "--dest-authfile", str(authfile),
                       "--dest-tls-verify=false", "oci-archive:/a.tar:segany", "docker://127.0.0.1:5000/segany:2"]]
    buildah = registry.push_command("buildah", _plan("containers-storage:localhost/segment-anywhere:cpu"), authfile, digestfile)
    assert buildah == [["buildah", "push", "--digestfile", str(digestfile), "--authfile", str(authfile),
                        "localhost/segment-anywhere:cpu", "docker://127.0.0.1:5000/segany:2"]]
    docker = registry.push_command("docker", _plan("docker-daemon:segment-anywhere:cpu"), authfile, digestfile)
    assert docker == [["docker", "--config", str(tmp_path), "tag", "segment-anywhere:cpu", "127.0.0.1:5000/segany:2"],
                      ["docker", "--config", str(tmp_path), "push", "127.0.0.1:5000/segany:2"]]
    assert not any(PASSWORD in arg for commands in (skopeo, buildah, docker) for command in commands for arg in command)


def test_push_tool_falls_back_by_source() -> None:
    def which(*present: str) -> Callable[[str], str | None]:
        return lambda name: f"/usr/bin/{name}" if name in present else None

    assert registry.push_tool("containers-storage:x", which("skopeo", "buildah")) == "skopeo"
    assert registry.push_tool("containers-storage:x", which("podman", "buildah")) == "buildah"
    assert registry.push_tool("containers-storage:x", which("podman")) == "podman"
    assert registry.push_tool("docker-daemon:x", which("docker")) == "docker"
    for source, tools in (("oci-archive:/a.tar", ("docker", "buildah")), ("docker://r/x:1", ("podman",)),
                          ("docker-daemon:x", ("buildah",))):
        with pytest.raises(ConfigError, match="install it"):
            registry.push_tool(source, which(*tools))


def test_push_errors_name_the_fix() -> None:
    plan = _plan("oci-archive:/a.tar")
    refused = registry._push_error("Error: unauthorized: authentication required", plan, "skopeo")
    assert "refused the credentials" in refused and "get-login-password" in refused
    unreachable = registry._push_error("dial tcp 127.0.0.1:5000: connect: connection refused", plan, "skopeo")
    assert "cannot be reached" in unreachable and "tls_verify=False" in unreachable


# --- the plan against a fake registry ----------------------------------------------------------


def test_plan_against_a_missing_repository(tmp_path: Path, fake: Callable[..., FakeRegistry]) -> None:
    archive, manifest, _, _ = _two_versions(tmp_path)
    fake()
    plan = plan_push(f"oci-archive:{archive}:test", f"{HOST}/segany:1", None)
    assert not plan.repository_exists and not any(layer.present for layer in plan.layers) and not plan.config.present
    assert plan.bytes_to_send == plan.bytes_total == manifest["config"]["size"] + sum(l["size"] for l in manifest["layers"])
    assert plan.manifest_digest == manifest["digest"] and plan.dest == f"docker://{HOST}/segany:1"
    assert plan.labels["io.segment-anywhere.model"] == "tiny"
    with pytest.raises(ConfigError, match="no image named"):
        plan_push(f"oci-archive:{archive}:other", f"{HOST}/segany:1", None)


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_plan_finds_the_layers_the_registry_holds(tmp_path: Path, fake: Callable[..., FakeRegistry], auth: str) -> None:
    v1_path, v1, v2_path, v2 = _two_versions(tmp_path)
    fake_registry = fake(auth)
    blobs, _, raw = oci_blobs([random_layer(1, 30_000), random_layer(2, 20_000), random_layer(3, 5_000)], {})
    fake_registry.holds({d: b for d, b in blobs.items() if d != v2["config"]["digest"]}, raw, "1")
    plan = plan_push(f"oci-archive:{v2_path}", f"docker://{HOST}/segany:2", RegistryAuth(HOST, "AWS", PASSWORD))
    assert [layer.present for layer in plan.layers] == [True, True, False] and not plan.config.present
    assert plan.bytes_to_send == v2["layers"][2]["size"] + v2["config"]["size"] and plan.repository_exists
    heads = [r for r in fake_registry.requests if r.method == "HEAD" and r.headers.get("authorization")]
    assert heads, "the blob checks were answered with the credentials"
    if auth == "bearer":  # the token came from the realm, asked with the credentials, for pulling this repository
        token = next(r for r in fake_registry.requests if r.url.host == "auth.example.com")
        assert token.url.params["service"] == "reg.example" and token.url.params["scope"] == "repository:segany:pull"


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_wrong_password_names_the_fix_and_never_the_password(tmp_path: Path, fake: Callable[..., FakeRegistry], auth: str) -> None:
    archive, _, _, _ = _two_versions(tmp_path)
    fake_registry = fake(auth)
    fake_registry.holds({"sha256:x": b"x"}, b"{}", "1")
    with pytest.raises(ConfigError) as raised:
        plan_push(f"oci-archive:{archive}", f"{HOST}/segany:2", RegistryAuth(HOST, "AWS", "wrong-" + PASSWORD))
    assert "refused" in raised.value.message and "get-login-password" in raised.value.message
    assert PASSWORD not in raised.value.message


def test_credentials_for_another_registry_are_refused(tmp_path: Path, fake: Callable[..., FakeRegistry]) -> None:
    archive, _, _, _ = _two_versions(tmp_path)
    fake()
    with pytest.raises(ConfigError, match="credentials are for other.example.com"):
        plan_push(f"oci-archive:{archive}", f"{HOST}/segany:2", RegistryAuth("other.example.com", "AWS", PASSWORD))


def test_local_storage_layers_match_by_diff_id(fake: Callable[..., FakeRegistry], monkeypatch: pytest.MonkeyPatch) -> None:
    """Local storage names layers by their uncompressed digest; the registry holds them compressed,
    under other digests, which the configs of the images already there map them to."""
    layers = [random_layer(1, 30_000), random_layer(2, 20_000), random_layer(5, 5_000)]
    blobs, manifest, raw = oci_blobs(layers[:2] + [random_layer(3, 5_000)], {})
    fake_registry = fake()
    fake_registry.holds(blobs, raw, "1")
    local_config = {"config": {"Labels": {"a": "b"}}, "rootfs": {"diff_ids": [_digest(layer) for layer in layers]}}
    local = {"config": {"digest": "sha256:cfg", "size": 100},
             "layers": [{"digest": _digest(layer), "size": len(layer)} for layer in layers]}
    monkeypatch.setattr(registry, "_inspect", lambda source: (local, "sha256:local", local_config))
    plan = plan_push("containers-storage:localhost/segment-anywhere:cpu", f"{HOST}/segany:2", None)
    assert [layer.present for layer in plan.layers] == [True, True, False]
    assert plan.bytes_to_send == 100 + len(layers[2]) and plan.labels == {"a": "b"}


# --- labels ------------------------------------------------------------------------------------


def test_label_names_and_baked_model() -> None:
    assert LABELS == ("io.segment-anywhere.device", "io.segment-anywhere.model", "io.segment-anywhere.weights",
                      "io.segment-anywhere.torch", "io.segment-anywhere.version")
    assert registry.LABELS == LABELS
    assert bake_labels("cpu", "vit_h") == {"io.segment-anywhere.model": "vit_h", "io.segment-anywhere.weights": "converted"}
    assert bake_labels("cuda", "vit_b")["io.segment-anywhere.weights"] == "checkpoint"
    assert baked_model({**bake_labels("cpu", "tiny"), "other": "x"}) == "tiny"
    assert baked_model({"io.segment-anywhere.weights": "none"}) is None and baked_model({}) is None
    assert carried({"io.segment-anywhere.device": "cpu", "io.buildah.version": "1"}) == {"io.segment-anywhere.device": "cpu"}


def test_read_source_of_an_archive_asks_no_registry(tmp_path: Path) -> None:
    archive, manifest, _, _ = _two_versions(tmp_path)
    found = registry.read_source(f"oci-archive:{archive}:test")
    assert found.digest == manifest["digest"] and found.labels["io.segment-anywhere.device"] == "cpu"
    assert found.size_bytes == manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
