"""``segany build --bake-weights``: the model put into the image, one build over the image without it.

cuda: the checkpoint as one thin layer, for the torch engine. cpu: the model converted to
OpenVINO in a build stage of the image with torch, and only the converted folder copied onto the
final image, by default the one without torch (deploy/build.py builds both).
"""

from __future__ import annotations

from pathlib import Path

OPENVINO_DIR = "/opt/segany/openvino"  # the converted model, baked in place of the weights (CPU variant)
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
RUN segany convert --checkpoint /tmp/weights/${WEIGHTS} --out %(openvino)s

FROM ${SEGANY_RUNTIME_IMAGE}
ARG MODEL_TYPE
COPY --from=convert %(openvino)s %(openvino)s
ENV SEGANY_MODEL=${MODEL_TYPE} SEGANY_OPENVINO_DIR=%(openvino)s
""" % {"openvino": OPENVINO_DIR}


def bake_containerfile(device: str) -> str:
    return BAKE_CONVERTED_CONTAINERFILE if device == "cpu" else BAKE_CONTAINERFILE


def bake_command(backend: str, context: Path, unbaked_ref: str, ref: str, weights_name: str, model: str,
                 platform: str, runtime_ref: str | None = None) -> list[str]:
    """``runtime_ref``: the final stage's image for the cpu bake (default: ``unbaked_ref``, torch kept)."""
    base = [backend, "build"] if backend != "buildah" else ["buildah", "bud"]
    return [*base, "--platform", platform, "-f", str(context / "Containerfile"), "-t", ref,
            "--build-arg", f"SEGANY_IMAGE={unbaked_ref}", "--build-arg", f"SEGANY_RUNTIME_IMAGE={runtime_ref or unbaked_ref}",
            "--build-arg", f"WEIGHTS={weights_name}", "--build-arg", f"MODEL_TYPE={model}", str(context)]
