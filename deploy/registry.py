"""Push an image to any OCI registry, sending only the layers it does not hold yet (docs/image.md, "Pushing").

    plan = plan_push("containers-storage:localhost/segment-anywhere:cpu-vit_h",
                     "docker://123.dkr.ecr.eu-west-1.amazonaws.com/segany:1.2", RegistryAuth(host, "AWS", token))
    plan.bytes_to_send, plan.labels   # before anything is sent
    push(plan).digest                 # skopeo copy; the layers the registry has are skipped

Sources: ``oci-archive:PATH[:name]`` (read here), ``containers-storage:REF``, ``docker-daemon:REF``,
``docker://REF`` (``skopeo inspect``; else ``buildah inspect``, or ``docker image inspect`` without
layer sizes). Local storage names layers by their uncompressed digest: they are matched by
``diff_id`` against the images already in the repository. Credentials come from the caller and
reach the push tool in a temporary authfile (mode 0600), never a command line or a message.
Without skopeo: ``buildah push`` (else ``podman push``) for ``containers-storage:``, ``docker
push`` for ``docker-daemon:``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from deploy.image_labels import LABELS  # noqa: F401  (the label names, for readers of PushPlan.labels)
from runners.errors import ConfigError

REFERENCE_TAGS = 16  # images of the repository whose layers count as present, besides the destination tag's
ACCEPT = ", ".join(f"application/vnd.{kind}+json" for kind in (
    "oci.image.manifest.v1", "docker.distribution.manifest.v2", "oci.image.index.v1", "docker.distribution.manifest.list.v2"))
CREDENTIAL_FIX = ("check the username and password (ECR: username AWS, password from `aws ecr get-login-password`, "
                  "valid 12 hours; Artifact Registry: username oauth2accesstoken, password from `gcloud auth print-access-token`)")
INSTALL_SKOPEO = "install it (apt-get install skopeo, dnf install skopeo, brew install skopeo)"


@dataclass(frozen=True)
class RegistryAuth:
    registry: str  # host[:port], as in the destination reference
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Blob:
    digest: str  # as the source names it (local storage: the uncompressed layer's)
    size: int
    present: bool  # the registry holds it (under this digest, or compressed, found by its diff_id)
    diff_id: str | None = None


@dataclass(frozen=True)
class PushPlan:
    source: str
    dest: str  # docker://HOST/NAME:TAG
    auth: RegistryAuth | None
    tls_verify: bool
    manifest_digest: str  # the source's (a push from local storage compresses: the pushed one differs)
    config: Blob
    layers: tuple[Blob, ...]
    labels: dict[str, str]  # the image config's Labels
    repository_exists: bool

    @property
    def bytes_total(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    @property
    def bytes_to_send(self) -> int:
        return sum(blob.size for blob in (self.config, *self.layers) if not blob.present)


@dataclass(frozen=True)
class PushResult:
    dest: str
    digest: str  # the manifest's digest in the registry
    bytes_sent: int  # per the plan
    tool: str


# --- pure pieces -------------------------------------------------------------------------------


def parse_dest(dest: str) -> tuple[str, str, str]:
    """``docker://HOST/NAME:TAG`` (or ``@DIGEST``) -> (host, name, tag or digest)."""
    host, _, rest = dest.removeprefix("docker://").partition("/")
    if not rest or not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(f"{dest!r}: name the registry, as in docker://HOST/NAME:TAG.")
    if "@" in rest:
        return (host, *rest.split("@", 1))  # type: ignore[return-value]
    name, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    return host, name, tag


def _user_pass(auth: RegistryAuth) -> str:
    return base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()


def basic_header(auth: RegistryAuth) -> str:
    return "Basic " + _user_pass(auth)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` (WWW-Authenticate) -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {key.lower(): value[1:-1].replace('\\"', '"') if value.startswith('"') else value
                            for key, value in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]*)', rest)}


def token_request(challenge: dict[str, str], scope: str) -> tuple[str, dict[str, str]]:
    """The token endpoint and its query for a Bearer challenge (the distribution token spec)."""
    if "realm" not in challenge:
        raise ConfigError("the registry asked for a token but named no realm: check that the address is an OCI registry.")
    return challenge["realm"], {**({"service": challenge["service"]} if "service" in challenge else {}),
                                "scope": challenge.get("scope", scope)}


def token_from_response(body: dict[str, Any]) -> str:
    token = body.get("token") or body.get("access_token")
    if not token:
        raise ConfigError(f"the registry's token service returned no token: {CREDENTIAL_FIX}.")
    return token


def authfile_json(auth: RegistryAuth) -> dict[str, Any]:
    """containers-auth.json(5), which is docker's config.json too."""
    return {"auths": {auth.registry: {"auth": _user_pass(auth)}}}


def write_authfile(auth: RegistryAuth, directory: Path, name: str = "auth.json") -> Path:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as handle:
        json.dump(authfile_json(auth), handle)
    return path


def scrub(text: str, auth: RegistryAuth | None) -> str:
    for secret in ({auth.password, _user_pass(auth)} - {""}) if auth else ():
        text = text.replace(secret, "***")
    return text


def push_tool(source: str, which: Callable[[str], str | None] = shutil.which) -> str:
    if which("skopeo"):
        return "skopeo"
    for tool in {"containers-storage": ("buildah", "podman"), "docker-daemon": ("docker",)}.get(source.split(":")[0], ()):
        if which(tool):
            return tool
    raise ConfigError(f"pushing {source} needs skopeo: {INSTALL_SKOPEO}.")


def push_command(tool: str, plan: PushPlan, authfile: Path | None, digestfile: Path) -> list[list[str]]:
    """The commands that push ``plan`` with ``tool``; credentials only ever by file."""
    ref = plan.source.partition(":")[2]
    insecure = [] if plan.tls_verify else ["--dest-tls-verify=false" if tool == "skopeo" else "--tls-verify=false"]
    if tool == "skopeo":
        return [["skopeo", "copy", "--retry-times", "2", "--digestfile", str(digestfile),
                 *(["--dest-authfile", str(authfile)] if authfile else []), *insecure, plan.source, plan.dest]]
    if tool in ("buildah", "podman"):
        return [[tool, "push", "--digestfile", str(digestfile), *(["--authfile", str(authfile)] if authfile else []),
                 *insecure, ref, plan.dest]]
    target, config = plan.dest.removeprefix("docker://"), ["--config", str(authfile.parent)] if authfile else []
    return [["docker", *config, "tag", ref, target], ["docker", *config, "push", target]]  # its config dir: the authfile


# --- the source --------------------------------------------------------------------------------


def _platform_manifest(index: dict[str, Any]) -> str:
    amd64 = [m for m in index["manifests"] if m.get("platform", {}).get("architecture") in ("amd64", None)]
    return (amd64 or index["manifests"])[0]["digest"]


def _read_archive(path: str, name: str | None) -> tuple[dict[str, Any], str, dict[str, Any]]:
    with tarfile.open(path) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/" + digest.replace(":", "/", 1)).read()  # type: ignore[union-attr]

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        entries = [m for m in index["manifests"]
                   if name is None or m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name]
        if not entries:
            raise ConfigError(f"oci-archive:{path} has no image named {name!r}: name one it has, or none.")
        digest = entries[0]["digest"]
        manifest = json.loads(blob(digest))
        if "manifests" in manifest:
            digest = _platform_manifest(manifest)
            manifest = json.loads(blob(digest))
        return manifest, digest, json.loads(blob(manifest["config"]["digest"]))


def _inspect(source: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    kind, _, ref = source.partition(":")
    if shutil.which("skopeo"):
        raw = _tool(["skopeo", "inspect", "--raw", source])
        if "manifests" in json.loads(raw):  # an index: the amd64 image, as skopeo copy on amd64 takes
            source = re.sub(r"(@sha256:[0-9a-f]+|:[^:/]+)$", "", source) + "@" + _platform_manifest(json.loads(raw))
            raw = _tool(["skopeo", "inspect", "--raw", source])
        config = json.loads(_tool(["skopeo", "inspect", "--raw", "--config", source]))
        return json.loads(raw), "sha256:" + hashlib.sha256(raw.encode()).hexdigest(), config
    if kind == "containers-storage" and shutil.which("buildah"):
        data = json.loads(_tool(["buildah", "inspect", "--type", "image", ref]))
        return json.loads(data["Manifest"]), data.get("FromImageDigest") or "", json.loads(data["Config"])
    if kind == "docker-daemon" and shutil.which("docker"):
        data = json.loads(_tool(["docker", "image", "inspect", ref]))[0]
        manifest = {"config": {"digest": data["Id"], "size": 0}, "layers": [{"digest": d, "size": 0} for d in data["RootFS"]["Layers"]]}
        return manifest, "", {"config": data.get("Config") or {}, "rootfs": {"diff_ids": data["RootFS"]["Layers"]}}
    raise ConfigError(f"reading {source} needs skopeo: {INSTALL_SKOPEO}.")


def _tool(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(command[:3])} ...` cannot read the image ({result.stderr.strip()[-400:]}): "
                          "check the reference (segany build prints it) and that the image exists.")
    return result.stdout


# --- the registry ------------------------------------------------------------------------------


class _Registry:
    def __init__(self, host: str, name: str, auth: RegistryAuth | None, tls_verify: bool) -> None:
        if auth is not None and auth.registry.removeprefix("https://").rstrip("/") != host:
            raise ConfigError(f"the credentials are for {auth.registry}, not {host}: pass RegistryAuth({host!r}, ...).")
        self.name, self.auth, self.header = name, auth, ""
        self.actions = "pull"  # what a bearer token is asked for (delete_image asks for delete too)
        self.client = httpx.Client(verify=tls_verify, timeout=30, follow_redirects=True)  # redirects drop Authorization
        self.base = f"https://{host}"
        if not tls_verify:  # a local registry: https unverified, or plain http
            try:
                self.client.get(self.base + "/v2/")
            except httpx.TransportError:
                self.base = f"http://{host}"

    def request(self, method: str, path: str, accept: str = "") -> httpx.Response:
        response = self._send(method, path, accept)
        if response.status_code == 401 and self._authorize(response):
            response = self._send(method, path, accept)
        if response.status_code in (401, 403):
            raise ConfigError(f"the registry {self.base} refused {'the credentials' if self.auth else 'access without credentials'}"
                              f" ({response.status_code} on {self.name}): {CREDENTIAL_FIX}.")
        return response

    def _send(self, method: str, path: str, accept: str) -> httpx.Response:
        headers = {key: value for key, value in (("Authorization", self.header), ("Accept", accept)) if value}
        try:
            return self.client.request(method, f"{self.base}/v2/{self.name}/{path}", headers=headers)
        except httpx.TransportError as error:
            tls = " (TLS failed: tls_verify=False is for a local registry only)" if "SSL" in str(error) else ""
            raise ConfigError(f"cannot reach the registry {self.base}{tls}: {type(error).__name__}; "
                              "check the address and the network.") from None

    def _authorize(self, response: httpx.Response) -> bool:
        """Answer a 401's challenge; False when there is nothing new to answer it with."""
        scheme, challenge = parse_challenge(response.headers.get("www-authenticate", ""))
        if scheme == "bearer":
            realm, query = token_request(challenge, f"repository:{self.name}:{self.actions}")
            try:
                token = self.client.get(realm, params=query, auth=(self.auth.username, self.auth.password) if self.auth else None)
            except httpx.TransportError:
                raise ConfigError(f"cannot reach the registry's token service {realm}: check the network.") from None
            if token.status_code != 200:
                raise ConfigError(f"the registry's token service refused the credentials ({token.status_code}): {CREDENTIAL_FIX}.")
            self.header = "Bearer " + token_from_response(token.json())
            return True
        if scheme == "basic" and self.auth is not None and not self.header:
            self.header = basic_header(self.auth)
            return True
        return False

    def has(self, digest: str) -> bool:
        return self.request("HEAD", f"blobs/{digest}").status_code == 200

    def known_layers(self, tag: str) -> tuple[bool, dict[str, str]]:
        """(the repository exists, diff_id -> blob digest over the images of the destination tag and others)."""
        listed = self.request("GET", "tags/list")
        tags = (listed.json().get("tags") or []) if listed.status_code == 200 else []
        known: dict[str, str] = {}
        for other in [tag, *[t for t in reversed(tags) if t != tag][:REFERENCE_TAGS]]:
            response = self.request("GET", f"manifests/{other}", ACCEPT)
            manifest = response.json() if response.status_code == 200 else {}
            if "manifests" in manifest:
                manifest = self.request("GET", f"manifests/{_platform_manifest(manifest)}", ACCEPT).json()
            config = self.request("GET", f"blobs/{manifest['config']['digest']}") if "config" in manifest else None
            if config is not None and config.status_code == 200:
                known.update(zip(config.json().get("rootfs", {}).get("diff_ids", []), (l["digest"] for l in manifest["layers"])))
        return listed.status_code == 200, known


def plan_push(source: str, dest: str, auth: RegistryAuth | None, tls_verify: bool = True) -> PushPlan:
    dest = dest if dest.startswith("docker://") else "docker://" + dest
    host, name, tag = parse_dest(dest)
    if source.startswith("oci-archive:"):
        path, _, image_name = source.removeprefix("oci-archive:").partition(":")
        manifest, digest, config = _read_archive(path, image_name or None)
    else:
        manifest, digest, config = _inspect(source)
    registry = _Registry(host, name, auth, tls_verify)
    present = {d["digest"]: registry.has(d["digest"]) for d in [manifest["config"], *manifest["layers"]]}
    exists, known = registry.known_layers(tag) if not all(present.values()) else (True, {})
    diff_ids = config.get("rootfs", {}).get("diff_ids") or [None] * len(manifest["layers"])
    layers = tuple(Blob(d["digest"], d["size"], present[d["digest"]] or (diff_id in known and registry.has(known[diff_id])), diff_id)
                   for d, diff_id in zip(manifest["layers"], diff_ids))
    config_blob = Blob(manifest["config"]["digest"], manifest["config"]["size"], present[manifest["config"]["digest"]])
    labels = dict((config.get("config") or {}).get("Labels") or {})
    return PushPlan(source, dest, auth, tls_verify, digest, config_blob, layers, labels, exists)


# --- the push ----------------------------------------------------------------------------------


def push(plan: PushPlan, progress: Any = None) -> PushResult:
    """Push ``plan`` with :func:`push_tool`'s tool. ``progress``: a rich Progress to draw into, None for
    our own (stderr), False for none; its bar is the plan's bytes to send, each blob line of the tool
    shown as it comes (their output is per blob, not per byte)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn

    tool = push_tool(plan.source)
    own = progress is None
    if own:
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True)
    missing = sum(not layer.present for layer in plan.layers)
    label = f"{tool} push {plan.dest.removeprefix('docker://')}: {missing} of {len(plan.layers)} layers to send"
    with tempfile.TemporaryDirectory(prefix="segany-push-") as tmp, progress if own else contextlib.nullcontext():
        authfile = write_authfile(plan.auth, Path(tmp), "config.json") if plan.auth else None
        digestfile, output = Path(tmp) / "digest", ""
        task = progress.add_task(label, total=max(plan.bytes_to_send, 1)) if progress else None
        for command in push_command(tool, plan, authfile, digestfile):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in process.stdout:  # type: ignore[union-attr]
                output += line
                if task is not None and re.search(r"(?:blob|layer)\s+(?:sha256:)?[0-9a-f]{12}|^[0-9a-f]{12}: \w+", line):
                    progress.update(task, description=f"{label} ({line.strip()[:60]})")
            if process.wait() != 0:
                raise ConfigError(_push_error(scrub(output, plan.auth), plan, tool))
        if task is not None:
            progress.update(task, completed=max(plan.bytes_to_send, 1), description=label)
        found = re.findall(r"digest: (sha256:[0-9a-f]{64})", output)  # docker push says it; the others write the digestfile
        digest = digestfile.read_text().strip() if digestfile.exists() else (found[-1] if found else "")
    return PushResult(plan.dest, digest, plan.bytes_to_send, tool)


def _push_error(output: str, plan: PushPlan, tool: str) -> str:
    tail = output.strip()[-600:]
    if re.search(r"unauthorized|authentication required|denied|\b40[13]\b", output, re.I):
        return f"{tool} push to {plan.dest}: the registry refused the credentials: {CREDENTIAL_FIX}.\n{tail}"
    if re.search(r"connection refused|no such host|dial tcp|i/o timeout|server gave HTTP response", output, re.I):
        return (f"{tool} push to {plan.dest}: the registry cannot be reached: check the address and the network "
                f"(a local http registry: tls_verify=False).\n{tail}")
    return f"{tool} push to {plan.dest} failed: {tail}"


@dataclass(frozen=True)
class SourceImage:
    """What a local image is, read without asking any registry (a dry run offline, the release's
    identity): its manifest digest, its config's labels and the size of its blobs."""

    digest: str
    labels: dict[str, str]
    size_bytes: int


def read_source(source: str) -> SourceImage:
    kind, _, rest = source.partition(":")
    if kind == "oci-archive":
        path, _, name = rest.partition(":")
        manifest, digest, config = _read_archive(path, name or None)
    else:
        manifest, digest, config = _inspect(source)
    size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    labels = dict((config.get("config") or {}).get("Labels") or {})
    return SourceImage(digest or manifest["config"]["digest"], labels, size)


def delete_image(ref: str, auth: RegistryAuth | None, tls_verify: bool = True) -> str | None:
    """Delete the image ``HOST/NAME:TAG`` (or ``@DIGEST``) points at, by the OCI distribution API
    (DELETE of its manifest, which Artifact Registry and ECR's Docker endpoints accept); returns the
    deleted digest, None when it is not there. Its layers go with the registry's garbage collection."""
    host, name, reference = parse_dest(ref)
    registry = _Registry(host, name, auth, tls_verify)
    registry.actions = "pull,push,delete"
    found = registry.request("HEAD", f"manifests/{reference}", ACCEPT)
    if found.status_code == 404:
        return None
    digest = found.headers.get("docker-content-digest") or (reference if reference.startswith("sha256:") else None)
    if found.status_code != 200 or not digest:
        raise ConfigError(f"cannot read {ref} ({found.status_code}) to delete it; delete it in the registry's console.")
    deleted = registry.request("DELETE", f"manifests/{digest}")
    if deleted.status_code not in (200, 202):
        raise ConfigError(f"the registry refused to delete {ref} ({deleted.status_code}): deleting needs the "
                          "repository's delete permission (Artifact Registry: roles/artifactregistry.repoAdmin).")
    return digest
