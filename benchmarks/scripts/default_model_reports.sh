#!/usr/bin/env bash
# Every committed figure that depends on the bundled model's weights, re-measured in one command after the
# default model changes (from the repository root, in the dev venv, on a quiet machine: about 35 minutes on
# 2 cores):
#
#   bash benchmarks/scripts/default_model_reports.sh
#
# runs, one after another, each rebuilding its exports from the current weights:
#   benchmarks/scripts/accuracy_report.sh   FP16/INT8/--max-drop drops, tiling, ORT vs torch, INT8 CPU latency
#   benchmarks/scripts/cpu_report.sh        CPU latency, roofline, Set5 σ 1.2 per target (FRESH=1)
#   benchmarks/scripts/video_report.sh      video PSNR and flicker per --idr mode
#   benchmarks/scripts/readme_figure.py     docs/images/baby_x4.png
# and prints how long each took. The README and benchmarks/README.md quote these reports: update their tables
# from the files it lists at the end. Stops at the first report that fails (its exit status).
set -euo pipefail
cd "$(dirname "$0")/../.."
step() {
    local name=$1
    shift
    local start=$SECONDS
    echo "== $name: $*"
    "$@"
    echo "== $name done in $((SECONDS - start)) s"
}
step accuracy bash benchmarks/scripts/accuracy_report.sh
step cpu env FRESH=1 bash benchmarks/scripts/cpu_report.sh
step video bash benchmarks/scripts/video_report.sh
step figure python benchmarks/scripts/readme_figure.py
echo "reports written (git status shows which changed):"
git status --short -- benchmarks/results docs/images
