#!/usr/bin/env bash
# Prepare a run of the GPU suite (bench/device/run.sh) on a machine that reaches no package index:
# the wheels it lacks (BentoML and what it needs, segment-anything, pycocotools, and
# segment-anything-fast built from its source, which is not on PyPI: the PyPI name
# "segment-anything-fast" is FastSAM, another model) and the photos, into .device/ (ignored by git;
# hand it to the machine beside the checkout).
#
#   bench/device/prepare.sh [SAM_FAST_SOURCE]
#
# SAM_FAST_SOURCE: a pip requirement or path for pytorch-labs' segment-anything-fast (default: its
# GitHub repository). PACKAGES_PRESENT names what the target already has (default
# bench/device/present.txt, the lent H200's image); TARGET_PYTHON its Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/../.."
SAM_FAST=${1:-git+https://github.com/pytorch-labs/segment-anything-fast}
PRESENT=${PACKAGES_PRESENT:-bench/device/present.txt}
PYTHON=${PYTHON:-python3}
DEST=.device
rm -rf "$DEST/whl" "$DEST/all"
mkdir -p "$DEST/whl" "$DEST/all" "$DEST/photos"

platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
"$PYTHON" -m pip download --quiet --only-binary=:all: --python-version "${TARGET_PYTHON:-3.12}" --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d "$DEST/all" bentoml segment-anything pycocotools

# Keep one wheel per distribution the target lacks: a copy of numpy or torch on its path would
# shadow the CUDA build it has.
for wheel in "$DEST"/all/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  grep -qx "$name" "$PRESENT" || cp "$wheel" "$DEST/whl/"
done
"$PYTHON" -m pip wheel --quiet --no-deps -w "$DEST/whl" "$SAM_FAST"
rm -rf "$DEST/all"
cp ../shared/images/*.jpg "$DEST/photos/"
du -sh "$DEST"
ls "$DEST/whl"
