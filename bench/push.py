"""python -m bench push: the bytes a code-only release sends to a registry that holds the last one.

Starts Debian's ``docker-registry`` on 127.0.0.1 (filesystem storage in a temporary folder),
builds the cpu image with the tiny model baked, as ``make test-oci`` does (``segany build
--backend buildah --bake-weights tiny.pth``), from a copy of the project, pushes it
(deploy/registry.py: ``plan_push``, then ``push``, which runs skopeo), changes one line of the
copy's code (a comment in service.py), builds and pushes again, and pushes that once more.

Per push: the plan's figures (``bytes_total``, ``bytes_to_send``: local storage, uncompressed) and
what the registry received (the compressed blobs whose uploads its access log shows, sized from its
storage; a blob sent again counts though the storage does not grow), against the image's size in
the registry (its manifest's compressed config and layers). The figure: the second push's
bytes received over the image's, goal under 5 %.

Needs root, buildah, skopeo and docker-registry (``apt-get install buildah skopeo docker-registry``),
about 15 GB of disk and two image builds (10-30 minutes on 2 cores). The CA bundle in
SSL_CERT_FILE, if set, is handed to the builds as a secret; SEGANY_OCI_BASE picks the base (auto).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, logger, write_result

IMAGE = "localhost/segany-bench-push"
TOOLS = ("buildah", "skopeo", "docker-registry")
CHANGED_FILE = "service.py"
IGNORED = (".venv", ".git", ".cache", "__pycache__", "*.egg-info", "results", "build", "dist")


class LocalRegistry:
    """Debian's docker-registry (distribution 2.x) on 127.0.0.1, storing under ``root``; with
    ``htpasswd`` (a bcrypt htpasswd file), Basic auth."""

    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        from bench.server import free_port

        self.root, self.htpasswd, self.port = root, htpasswd, free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        auth = f"auth: {{htpasswd: {{realm: segany-test, path: {self.htpasswd}}}}}\n" if self.htpasswd else ""
        config = self.root / "config.yml"
        config.write_text(f"version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\n"
                          f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}\n"
                          f"http: {{addr: '{self.host}'}}\n{auth}")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=(self.root / "registry.log").open("wb"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()[-2000:]
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer on {self.host}:\n{self.log()[-2000:]}")

    def __exit__(self, *_: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")

    def blobs(self) -> dict[str, int]:
        """digest -> size of every blob in the registry's storage (what it received, compressed)."""
        folder = self.root / "data/docker/registry/v2/blobs"
        return {f"{path.parents[2].name}:{path.parent.name}": path.stat().st_size for path in folder.glob("*/*/*/data")}

    def uploads(self, since: int = 0) -> set[str]:
        """The blobs whose uploads the registry finished (its access log from offset ``since``): what was
        sent, even a blob it held already (its storage then does not grow)."""
        found = re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ?"]+\?[^ "]*digest=sha256(?::|%3A)([0-9a-f]{64})', self.log()[since:])
        return {f"sha256:{digest}" for digest in found}

    def image_bytes(self, name: str, tag: str) -> int:
        manifest = httpx.get(f"http://{self.host}/v2/{name}/manifests/{tag}", timeout=30, headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"}).json()
        return manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


def copy_project(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return dest


def build(project: Path, work: Path, weights: Path) -> float:
    command = [sys.executable, "-m", "deploy.cli", "build", "--backend", "buildah", "--device", "cpu",
               "--bake-weights", str(weights), "--image", IMAGE, "--base", os.environ.get("SEGANY_OCI_BASE", "auto"),
               "--project", "."]
    if os.environ.get("SSL_CERT_FILE"):
        command += ["--ca-bundle", os.environ["SSL_CERT_FILE"]]
    env = dict(os.environ, BENTOML_HOME=str(work / "bentoml"), COLUMNS="200")
    start = time.monotonic()
    result = subprocess.run(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (work / f"build-{int(start)}.log").write_text(result.stdout)
    if result.returncode != 0:
        raise RuntimeError(f"segany build failed:\n{result.stdout[-4000:]}")
    return time.monotonic() - start


def push_once(registry: LocalRegistry, tag: str) -> dict[str, Any]:
    from deploy.registry import plan_push, push

    plan = plan_push(f"containers-storage:{IMAGE}:cpu-tiny", f"docker://{registry.host}/segany:{tag}", None, tls_verify=False)
    before, log_start = registry.blobs(), len(registry.log())
    start = time.monotonic()
    result = push(plan, progress=False)
    seconds = time.monotonic() - start
    blobs = registry.blobs()
    uploaded = registry.uploads(log_start)  # layers and config (the manifest is PUT apart, a few KB)
    gained = {digest: size for digest, size in blobs.items() if digest not in before}
    figures = {"tag": tag, "digest": result.digest, "layers": len(plan.layers),
               "layers_to_send": sum(not layer.present for layer in plan.layers),
               "plan_bytes_total": plan.bytes_total, "plan_bytes_to_send": plan.bytes_to_send,
               "registry_bytes_received": sum(blobs[digest] for digest in uploaded), "registry_blobs_received": len(uploaded),
               "registry_storage_gained": sum(gained.values()),
               "image_bytes_in_registry": registry.image_bytes("segany", tag), "push_s": round(seconds, 1),
               "layer_sizes": [layer.size for layer in plan.layers], "labels": plan.labels}
    logger.info("push %s: %d of %d layers to send, %d bytes received by the registry of %d", tag,
                figures["layers_to_send"], len(plan.layers), figures["registry_bytes_received"], figures["image_bytes_in_registry"])
    return figures


def run() -> dict[str, Any]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        raise SystemExit(f"bench push needs root and {', '.join(TOOLS)} (apt-get install buildah skopeo docker-registry); "
                         f"missing: {', '.join(missing) or 'root'}")
    work = Path(tempfile.mkdtemp(prefix="segany-bench-push-", dir="/var/tmp"))
    try:
        from runners.models import write_checkpoint
        from runners.specs import get_spec

        weights = write_checkpoint(get_spec("tiny"), work / "tiny.pth")
        project = copy_project(work / "project")
        with LocalRegistry(work / "registry") as registry:
            first_build = build(project, work, weights)
            first = push_once(registry, "v1")
            changed = project / CHANGED_FILE
            changed.write_text(changed.read_text() + "# bench push: a code-only change\n")
            second_build = build(project, work, weights)
            second = push_once(registry, "v2")
            again = push_once(registry, "v2-again")
        ratio = second["registry_bytes_received"] / second["image_bytes_in_registry"]
        result = {"image": f"{IMAGE}:cpu-tiny (cpu, tiny converted, no torch)", "change": f"one comment line in {CHANGED_FILE}",
                  "builds_s": [round(first_build), round(second_build)], "pushes": [first, second, again],
                  "code_only_ratio": ratio, "plan_ratio": second["plan_bytes_to_send"] / second["plan_bytes_total"],
                  "goal": "< 5%"}
        write_result("push", result)
        print(f"code-only release: {second['registry_bytes_received']} of {second['image_bytes_in_registry']} bytes "
              f"sent ({ratio:.2%}; plan {result['plan_ratio']:.2%}); re-push sent {again['registry_bytes_received']}")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for tag in ("cpu", "cpu-slim", "cpu-tiny"):
            subprocess.run(["buildah", "rmi", f"{IMAGE}:{tag}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
