"""``segany build --bake-weights``: the model put into the image, one build over the image without it.

cuda: the checkpoint as one thin layer, for the torch engine. cpu: the model converted to
OpenVINO in a build stage of the image with torch, and only the converted folder copied onto the
final image, by default the one without torch (deploy/build.py builds both).

The model's layers sit on top, over the code, and a code-only release still pushes only the
code: every layer is written with its files at time 0 (:func:`reproducible_options`), the
conversion gives the same bytes from the same checkpoint and libraries, and its manifest.json,
which records how long the conversion took, is a layer of its own. So the model's big layer
comes out with the same digest, which the registry already holds (docs/image.md, "Layers").
"""

from __future__ import annotations

from pathlib import Path

from deploy.image_labels import bake_labels

OPENVINO_DIR = "/opt/segany/openvino"  # the converted model, baked in place of the weights (CPU variant)
MANIFEST_STAGING_DIR = "/opt/segany/manifest"  # the convert stage only: the manifest, apart from the model
WEIGHTS_DIR = "/opt/segany/weights"  # not /opt/ml/model: SageMaker mounts the model artifact over that

# segany build --bake-weights (CUDA variant): the checkpoint as one thin layer over the image without weights.
BAKE_CONTAINERFILE = """\
ARG SEGANY_IMAGE
FROM ${SEGANY_IMAGE}
ARG WEIGHTS
# Not named SEGANY_MODEL: the image's ENV of that name would win over a build argument.
ARG MODEL_TYPE
COPY ${WEIGHTS} %(dir)s/${WEIGHTS}
ENV SEGANY_CHECKPOINT=%(dir)s/${WEIGHTS} SEGANY_MODEL=${MODEL_TYPE}
""" % {"dir": WEIGHTS_DIR}
# The CPU variant: the encoder and decoders converted to OpenVINO in a build stage (on the image
# with torch), so no container start ever converts them, and only the converted folder in the
# final image, which is SEGANY_RUNTIME_IMAGE: by default the image without torch (SEGANY_TORCH=0,
# 4.6 GB smaller). The torch-free engine needs nothing else (runners/converted.py,
# served_from_folder), and the checkpoint beside it weighed as much again: vit_h 2.56 GB, which
# took a baked vit_h image over SageMaker Serverless' 10 GB.
BAKE_CONVERTED_CONTAINERFILE = """\
ARG SEGANY_IMAGE
ARG SEGANY_RUNTIME_IMAGE
FROM ${SEGANY_IMAGE} AS convert
ARG WEIGHTS
USER root
COPY ${WEIGHTS} /tmp/weights/${WEIGHTS}
RUN segany convert --checkpoint /tmp/weights/${WEIGHTS} --out %(openvino)s && \\
    mkdir %(manifest_dir)s && mv %(openvino)s/manifest.json %(manifest_dir)s/

FROM ${SEGANY_RUNTIME_IMAGE}
ARG MODEL_TYPE
# Two layers: the converted model (the same bytes whenever the checkpoint is), then its manifest
# (which records the conversion's duration, so it differs from build to build).
COPY --from=convert %(openvino)s %(openvino)s
COPY --from=convert %(manifest_dir)s/manifest.json %(openvino)s/manifest.json
ENV SEGANY_MODEL=${MODEL_TYPE} SEGANY_OPENVINO_DIR=%(openvino)s
""" % {"openvino": OPENVINO_DIR, "manifest_dir": MANIFEST_STAGING_DIR}


def bake_containerfile(device: str) -> str:
    return BAKE_CONVERTED_CONTAINERFILE if device == "cpu" else BAKE_CONTAINERFILE


def reproducible_options(backend: str) -> dict[str, str | None]:
    """Build flags (name: value, None for a bare flag) for layers a rebuild reproduces bit for bit.

    buildah: ``--layers`` (one layer per step, cached; without it a stage is one layer, the
    dependencies and the code together) and ``--timestamp 0`` (every file in every layer, and the
    image's dates, at time 0). podman: ``--timestamp 0`` (it caches layers by default). docker:
    ``SOURCE_DATE_EPOCH=0`` (BuildKit dates the image with it); its layer cache keeps unchanged
    layers, but a rebuilt layer keeps its files' times (docs/image.md)."""
    if backend == "buildah":
        return {"layers": None, "timestamp": "0"}
    if backend == "podman":
        return {"timestamp": "0"}
    return {"build-arg": "SOURCE_DATE_EPOCH=0"}


def bake_command(backend: str, context: Path, unbaked_ref: str, ref: str, weights_name: str, model: str,
                 platform: str, runtime_ref: str | None = None, device: str = "cpu") -> list[str]:
    """``runtime_ref``: the final stage's image for the cpu bake (default: ``unbaked_ref``, torch kept)."""
    base = [backend, "build"] if backend != "buildah" else ["buildah", "bud"]
    flags = [item for name, value in reproducible_options(backend).items() for item in (f"--{name}", value) if item]
    labels = [item for key, value in bake_labels(device, model).items() for item in ("--label", f"{key}={value}")]
    return [*base, "--platform", platform, "-f", str(context / "Containerfile"), "-t", ref, *flags, *labels,
            "--build-arg", f"SEGANY_IMAGE={unbaked_ref}", "--build-arg", f"SEGANY_RUNTIME_IMAGE={runtime_ref or unbaked_ref}",
            "--build-arg", f"WEIGHTS={weights_name}", "--build-arg", f"MODEL_TYPE={model}", str(context)]
