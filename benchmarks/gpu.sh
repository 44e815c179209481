#!/usr/bin/env bash
# The GPU suite on one GPU, in under 8 minutes: training throughput (gpu_training); JPEG files through the
# training loader with the photographs prepared on the GPU (data.pipeline=gpu: first and later epochs against
# the cached step, nvJPEG's own decode rate as the bound) and in the workers (gpu_loader); Grad-CAM and the
# adversarial edit at the batch batch_size=auto chooses, xmed-predict on 3,000 JPEG eyes with its start-up
# and the image-quality gate's rate, every explainer at batch 32 (gpu_explain). What each line must show: docs/gpu.md.
#   bash benchmarks/gpu.sh                      # results in benchmarks/results/<gpu name>/results.{json,md}
#   bash benchmarks/gpu.sh --out /tmp/gpu       # elsewhere; any option of `python -m benchmarks` is passed on
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh --device cpu --quick --out /tmp/gpu_quick   # a check on a CPU
# xmed runs from this source tree (not installed). Where the interpreter lacks xmed's dependencies and
# .whl/ holds their wheels (bash benchmarks/fetch_wheels.sh, beforehand, where there is network), they
# are installed into /tmp/site.
# A run past BENCH_TIMEOUT seconds (default 460) is stopped; results.json keeps what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ! "$PYTHON" -c "import hydra, omegaconf, albumentations, captum, pydicom, openpyxl, xlrd" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
exec timeout --signal=TERM --kill-after=15 "${BENCH_TIMEOUT:-460}" "$PYTHON" -m benchmarks --suite gpu --device cuda "$@"
