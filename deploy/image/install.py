"""Install the image's Python packages (run by deploy/image/Dockerfile.j2, at build time).

Runs in the build container, as root, with only the standard library, after BentoML's
uv is installed and /app/.venv exists. It reads the variant from the build arguments:

- ``SEGANY_DEVICE``: ``cpu`` leaves out ``triton`` (torch's GPU compiler, about 0.9 GB; torch
  runs on CPU without it); ``cuda`` installs torch with everything it asks for.
- ``SEGANY_TORCH_INDEX_URL``: torch and torchvision come from this index first (for example
  https://download.pytorch.org/whl/cpu, whose CPU-only wheels have no nvidia-* libraries);
  what it installed is then pinned, so the rest of the install cannot swap it for PyPI's.
- ``SEGANY_PIP_CONSTRAINTS``: requirements every install must satisfy (segany build pins
  torch and torchvision to the versions it was tested with).
- ``SEGANY_TORCH``: ``1`` (default) or ``0``, cpu only: leave out torch, torchvision and
  segment-anything (and, with them, the nvidia-* libraries PyPI's torch pulls in: 4.6 GB). Such
  an image serves a model converted ahead of time (``SEGANY_OPENVINO_DIR``) with OpenVINO alone,
  and nothing else: segany build uses it under ``--bake-weights`` on cpu.

then runs the bento's own ``env/python/install.sh`` (requirements.txt and bentoml), installs
the project's build backend (the Dockerfile's next step installs the service's code with
``--no-build-isolation``; PyPI's torch used to bring setuptools along), and checks that the
service's imports load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Mapping

VENV_PYTHON = "/app/.venv/bin/python"
WORK = Path("/tmp/segany-install")
TORCH_PACKAGES = ("torch", "torchvision")
# On CPU these are dead weight: torch loads and runs without them.
CPU_EXCLUDED = ("triton",)
# pyproject.toml's [build-system] requires (tests/test_build.py checks that they agree).
BUILD_REQUIRES = ("setuptools>=68",)
# What only the torch engine and `segany convert` import (SEGANY_TORCH=0 leaves them out).
TORCH_STACK = (*TORCH_PACKAGES, "segment-anything")
IMPORT_CHECK = "import torch, torchvision, segment_anything, bentoml, cv2, pycocotools; print('torch', torch.__version__)"
# Without torch: the torch-free engine's imports load, and torch is really gone.
IMPORT_CHECK_WITHOUT_TORCH = ("import importlib.util, bentoml, cv2, pycocotools, openvino\n"
                              "if importlib.util.find_spec('torch'):\n    raise SystemExit('torch is still installed')\n"
                              "print('no torch; openvino', openvino.__version__)")


def constraint_lines(env: Mapping[str, str]) -> list[str]:
    return env.get("SEGANY_PIP_CONSTRAINTS", "").split()


def with_torch(env: Mapping[str, str]) -> bool:
    value = env.get("SEGANY_TORCH", "1").strip().lower() or "1"
    if value not in ("0", "1"):
        raise SystemExit(f"SEGANY_TORCH={value!r}: use 1 (torch in the image) or 0 (a converted model only, cpu)")
    return value == "1"


def override_lines(env: Mapping[str, str]) -> list[str]:
    """uv overrides that drop a dependency everywhere, direct requirements included (a marker
    that is never true)."""
    device = env.get("SEGANY_DEVICE", "cpu").strip().lower() or "cpu"
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"SEGANY_DEVICE={device!r}: use cpu or cuda")
    if device == "cuda":
        if not with_torch(env):
            raise SystemExit("SEGANY_TORCH=0 is for the cpu variant: on GPUs the torch engine serves")
        return []
    excluded = CPU_EXCLUDED if with_torch(env) else (*CPU_EXCLUDED, *TORCH_STACK)
    return [f"{name} ; sys_platform == 'never'" for name in excluded]


def torch_preinstall(env: Mapping[str, str]) -> list[str] | None:
    """The command that installs torch and torchvision from SEGANY_TORCH_INDEX_URL, if set.

    ``--extra-index-url``: uv looks there before PyPI and takes a package from the first index
    that has it, so torch comes from the given index and only what it lacks from PyPI.
    """
    index = env.get("SEGANY_TORCH_INDEX_URL", "").strip()
    if not index or not with_torch(env):
        return None
    return ["uv", "pip", "install", "--python", VENV_PYTHON, "--extra-index-url", index, *TORCH_PACKAGES]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pins_from_freeze(freeze: str) -> list[str]:
    """``torch==2.14.1+cpu`` lines of ``uv pip freeze`` for the torch packages."""
    return [line.strip() for line in freeze.splitlines()
            if "==" in line and requirement_name(line) in TORCH_PACKAGES]


def pin_installed(constraints: list[str], pins: list[str]) -> list[str]:
    """The constraints with exact pins of what the torch index installed in place of their own."""
    pinned = {requirement_name(pin) for pin in pins}
    return [c for c in constraints if requirement_name(c) not in pinned] + pins


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def main(env: Mapping[str, str] = os.environ) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    run_env = dict(env, VIRTUAL_ENV="/app/.venv", UV_NO_CACHE="1", UV_COMPILE_BYTECODE="1")
    constraints = constraint_lines(env)
    overrides = override_lines(env)
    if overrides:
        run_env["UV_OVERRIDE"] = _write(WORK / "overrides.txt", overrides)
    run_env["UV_CONSTRAINT"] = _write(WORK / "constraints.txt", constraints)

    command = torch_preinstall(env)
    if command is not None:
        print("segany: torch from", env["SEGANY_TORCH_INDEX_URL"], flush=True)
        subprocess.run(command, env=run_env, check=True)
        freeze = subprocess.run(["uv", "pip", "freeze", "--python", VENV_PYTHON], env=run_env, check=True,
                                capture_output=True, text=True).stdout
        constraints = pin_installed(constraints, pins_from_freeze(freeze))
        run_env["UV_CONSTRAINT"] = _write(WORK / "constraints.txt", constraints)

    subprocess.run(["bash", "env/python/install.sh"], env=run_env, check=True)
    subprocess.run(["uv", "pip", "install", "--python", VENV_PYTHON, *BUILD_REQUIRES], env=run_env, check=True)
    subprocess.run([VENV_PYTHON, "-c", IMPORT_CHECK if with_torch(env) else IMPORT_CHECK_WITHOUT_TORCH],
                   env=run_env, check=True)
    for path in WORK.iterdir():
        path.unlink()
    WORK.rmdir()


if __name__ == "__main__":
    sys.exit(main())
