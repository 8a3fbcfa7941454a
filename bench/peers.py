"""The peers the encoder is measured against, on the same random-init weights:

- ``samexporter`` (PyPI) exports SAM's image encoder to ONNX. It pins torch 2.10 and onnx
  1.20, so it runs in a virtualenv of its own (``.cache/bench/venv-samexporter``), never in
  the project's; the export is made once per checkpoint and kept.
- ONNX Runtime (CPU) and OpenVINO (f32 and bf16 inference precision) run that same file.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, logger

VENV = CACHE / "venv-samexporter"
SAMEXPORTER_PACKAGES = [
    ["torch==2.10.0"],  # with its CUDA libraries: PyPI's build does not import without them
    ["torchvision==0.25.0", "--no-deps"],  # segment_anything imports it
    ["numpy", "sympy", "networkx", "jinja2", "filelock", "fsspec", "typing_extensions", "onnx==1.20.1",
     "onnxscript==0.6.2", "segment-anything==1.0", "samexporter==0.5.0", "timm", "--no-deps"],
    ["ml_dtypes", "protobuf", "onnx_ir", "packaging", "pyyaml", "huggingface_hub", "safetensors", "pillow",
     "mpmath", "markupsafe", "tqdm", "requests"],
]


def samexporter_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        logger.info("creating %s for samexporter (its own torch and onnx pins)", VENV)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        for packages in SAMEXPORTER_PACKAGES:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def samexporter_onnx(model_type: str, checkpoint: Path) -> Path:
    """The encoder exported by samexporter (cached next to the checkpoint)."""
    out = CACHE / "samexporter" / f"{checkpoint.stem}.encoder.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        logger.info("exporting %s with samexporter to %s", checkpoint.name, out)
        subprocess.run([str(samexporter_python()), "-m", "samexporter.export_encoder", "--checkpoint", str(checkpoint),
                        "--output", str(out), "--model-type", model_type], check=True)
    return out


class OnnxRuntimeEncoder:
    name = "onnxruntime"

    def __init__(self, onnx_path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


class BareOpenVINOEncoder:
    """OpenVINO on the ONNX file as anyone would run it: read, compile, infer."""

    def __init__(self, onnx_path: Path, precision: str) -> None:
        import openvino as ov
        import openvino.properties.hint as hints

        self.name = f"openvino_{precision}"
        core = ov.Core()
        start = time.perf_counter()
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
        })
        self.compile_s = time.perf_counter() - start
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[0].copy()
