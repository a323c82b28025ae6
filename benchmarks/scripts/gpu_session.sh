#!/usr/bin/env bash
# The GPU one-shot (docs/gpu.md). On the lent GPU machine, from the repository root, after
# benchmarks/scripts/gpu_prepare.sh ran here and .gpu/ was carried along:
#
#   OUT=$OUT bash benchmarks/scripts/gpu_session.sh [extra options of python -m lightbsr.benchmarks.gpu_session]
#
# Installs lightbsr into the machine's Python (no network: --no-deps; the image has torch, numpy, OpenCV,
# Pillow, safetensors, tqdm; wheels in .whl/ are installed first when present), then trains, evaluates and
# times the default model within BUDGET seconds (default 510: one call of at most 9 minutes with the start),
# and leaves at most 8 files in OUT: the weights, the teacher, the model card, eval.json, latency.json/.md/.png
# and logs.tar.gz (run logs, summary.json, this console).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
BUDGET=${BUDGET:-510}
DATA=${DATA:-.gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
work=$(mktemp -d)
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps .whl/*.whl || exit 1
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || exit 1
init=()
[ -f "$DATA/teacher.safetensors" ] && init=(--init-teacher "$DATA/teacher.safetensors")
eval_sets=()
for name in Set5 Set14 BSD68; do
    [ -d "$DATA/benchmark/$name" ] && eval_sets+=("$DATA/benchmark/$name")
done
PYTHONUNBUFFERED=1 "$PYTHON" -m lightbsr.benchmarks.gpu_session --out "$OUT" --work "$work" \
    --data "$DATA/train" --val "$DATA/benchmark/Set5" --eval "${eval_sets[@]}" --budget "$BUDGET" \
    "${init[@]}" "$@" 2>&1 | tee "$work/console.log"
rc=${PIPESTATUS[0]}
tar -czf "$OUT/logs.tar.gz" -C "$work" --exclude='state' --exclude='*.safetensors' --exclude='tensorboard' .
rm -rf "$work"
ls -l "$OUT"
exit "$rc"
