"""Run an unpacked OCI image the way a container runtime would, without one.

    unshare --mount --pid --fork --propagation private -- python3 run_rootfs.py SPEC.json

For machines where ``docker run``/``podman run`` are unavailable (tests/test_oci.py). The
process that ``unshare`` forks is PID 1 of a new PID namespace, as in a container; it

- mounts the root file system read-only (``--read-only``), a tmpfs on /tmp, /proc, the
  host's /dev, and the host's /etc/hosts and /etc/resolv.conf (as Docker does);
- chroots into it, changes to the image's working directory, drops to the image's user
  (and no supplementary groups);
- and execs the image's entrypoint with exactly the image's environment plus SPEC's.

SPEC: {"rootfs", "args", "env", "cwd", "uid", "gid", "read_only", "tmpfs_size"}. Needs root
(CAP_SYS_ADMIN) on the host; it shares the host's network, like ``--network host``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["rootfs"])
    for directory in ("tmp", "proc", "dev"):
        (root / directory).mkdir(exist_ok=True)
    for name in ("hosts", "resolv.conf"):
        target = root / "etc" / name
        if target.is_symlink():
            target.unlink()
        target.touch(exist_ok=True)
    _mount("--bind", str(root), str(root))
    if spec.get("read_only", True):
        _mount("-o", "remount,bind,ro", str(root))
    _mount("-t", "tmpfs", "-o", f"mode=1777,size={spec.get('tmpfs_size', '4g')}", "tmpfs", str(root / "tmp"))
    _mount("-t", "proc", "proc", str(root / "proc"))
    _mount("--rbind", "/dev", str(root / "dev"))
    for name in ("hosts", "resolv.conf"):
        if Path("/etc", name).exists():
            _mount("--bind", "-o", "ro", f"/etc/{name}", str(root / "etc" / name))

    env = dict(spec["env"])
    os.chroot(root)
    os.chdir(spec.get("cwd") or "/")
    os.setgroups([])
    os.setgid(int(spec["gid"]))
    os.setuid(int(spec["uid"]))
    program = spec["args"][0]
    if "/" not in program:
        for directory in env.get("PATH", "/usr/bin:/bin").split(":"):
            candidate = Path(directory, program)
            if os.access(candidate, os.X_OK):
                program = str(candidate)
                break
    os.execve(program, spec["args"], env)


if __name__ == "__main__":
    main(sys.argv[1])
