#!/usr/bin/env bash
# Fetch, on a machine with network, the wheels of xmed's dependencies that a GPU machine without network
# may lack (its image already holding torch, torchvision, timm, lightning, torchmetrics, numpy, scipy,
# scikit-learn, opencv, pillow, safetensors, matplotlib), into .whl/, for benchmarks/gpu.sh to install:
#   bash benchmarks/fetch_wheels.sh [python version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-3.12}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    "${PLATFORMS[@]}" -d .whl pydantic-core==2.50.5 simsimd==6.5.16 stringzilla==5.3.2
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl \
    albucore==0.0.24 albumentations==2.0.8 annotated-types==0.8.0 captum==0.9.0 et-xmlfile==2.0.0 \
    hydra-core==1.3.8 omegaconf==2.3.1 openpyxl==3.1.5 pydantic==2.14.4 pydicom==3.0.2 \
    typing-extensions==4.16.0 typing-inspection==0.4.5 xlrd==2.0.2
# antlr4-python3-runtime 4.9.3 (hydra's parser) is published as source only: build its wheel here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
