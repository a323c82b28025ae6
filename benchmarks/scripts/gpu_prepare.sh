#!/usr/bin/env bash
# Prepare the GPU one-shot (docs/gpu.md), here, before asking for a GPU: copy the training and benchmark
# images into .gpu/ (ignored by git, sent with `carry: [".gpu"]`: the GPU machine gets a copy of the working
# tree, not ../shared), and the teacher to continue from, if one is given.
#
#   bash benchmarks/scripts/gpu_prepare.sh [TEACHER.safetensors]
#
# The working tree that travels is limited to 64 MiB: BSD68 (18 MB) is left out when it would not fit
# (evaluate it here afterwards: lightbsr eval lightbsr_student_x4_setting1.safetensors --dataset BSD68).
# Environment: DATASETS (default ../shared/datasets), LIMIT_MB (default 64).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATASETS=${DATASETS:-../shared/datasets}
LIMIT_MB=${LIMIT_MB:-64}
rm -rf .gpu
mkdir -p .gpu/train .gpu/benchmark
cp -r "$DATASETS"/train/* .gpu/train/
cp -r "$DATASETS"/benchmark/Set5 "$DATASETS"/benchmark/Set14 .gpu/benchmark/
if [ $# -ge 1 ]; then
    cp "$1" .gpu/teacher.safetensors
fi
mb() { du -sm "$@" | awk '{s += $1} END {print s}'; }
tree_mb=$(git ls-files -z | xargs -0 du -cm 2>/dev/null | tail -1 | cut -f1)
used=$((tree_mb + $(mb .gpu)))
bsd=$(mb "$DATASETS"/benchmark/BSD68)
if [ $((used + bsd)) -lt "$LIMIT_MB" ]; then
    cp -r "$DATASETS"/benchmark/BSD68 .gpu/benchmark/
    used=$((used + bsd))
else
    echo "BSD68 left out: ${used} MB + ${bsd} MB would exceed ${LIMIT_MB} MB; evaluate it here afterwards"
fi
echo "prepared .gpu/ (about ${used} MB with the tracked files): $(ls .gpu/benchmark | tr '\n' ' ')"
