#!/usr/bin/env bash
# The committed load test of `lightbsr serve`, in one command (from the repository root, in the dev venv):
#
#   bash benchmarks/scripts/serve_load.sh
#
# 1. the model: MODEL (an ONNX file, its split graphs beside it), else the LightBSR student with the reference
#    weights (tests/runtime_models.py: deterministic, NOT trained) exported by `lightbsr export --split`;
# 2. starts `lightbsr serve` (one CPU instance) on free loopback ports with SERVE_PYTHON, the Python of the
#    [serve] environment (default: $LIGHTBSR_SERVE_PYTHON, else .venv-serve/bin/python; docs/deploy.md);
# 3. python -m lightbsr.benchmarks.serve_load: REQUESTS requests per row (one count, or one per size) at each
#    of CONCURRENCY clients on SIZES×SIZES LR crops of examples/baby_lr.png over gRPC, every answer checked
#    against the local Upscaler's output, and the local Upscaler on the same images before the first server
#    row and after each → $OUT/$NAME.json and $OUT/$NAME.md (~15 min on 2 busy cores);
# 4. stops the server with SIGTERM and adds to the report whether it drained and exited with status 0.
# Loopback only, a fixed number of requests, a timeout on each: it stops by itself.
# Environment overrides: MODEL, SERVE_PYTHON, OUT (benchmarks/results), NAME (serve-load-cpu-<nproc>core),
# WORK (runs/serve-load), REQUESTS ("32 16"), SIZES ("64 128"), CONCURRENCY ("1 4 16"), NOTE (a line for the report).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results}
NAME=${NAME:-serve-load-cpu-$(nproc)core}
WORK=${WORK:-runs/serve-load}
SERVE_PYTHON=${SERVE_PYTHON:-${LIGHTBSR_SERVE_PYTHON:-.venv-serve/bin/python}}
REQUESTS=${REQUESTS:-32 16}
SIZES=${SIZES:-64 128}
CONCURRENCY=${CONCURRENCY:-1 4 16}
mkdir -p "$WORK" "$OUT"

if [ -z "${MODEL:-}" ]; then
    python tests/runtime_models.py "$WORK" > /dev/null
    lightbsr export "$WORK/lightbsr_student_x4_ref.safetensors" -o "$WORK/student.onnx" --split > /dev/null
    MODEL=$WORK/student.onnx
    WEIGHTS="the LightBSR student with the reference weights (tests/runtime_models.py: deterministic, NOT trained), exported by lightbsr export --split"
else
    WEIGHTS=$MODEL
fi

read -r HTTP GRPC METRICS < <(python -c '
import socket
sockets = [socket.socket() for _ in range(3)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))')
rm -f "$WORK/serve.json"
"$SERVE_PYTHON" -m lightbsr serve -m "$MODEL" --device cpu --json --address 127.0.0.1 \
    --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" --log "$WORK/tritonserver.log" \
    > "$WORK/serve.json" 2> "$WORK/serve.err" &
SERVER=$!
trap 'kill -TERM $SERVER 2> /dev/null || true' EXIT
for _ in $(seq 600); do # the server gets 5 minutes to be ready
    [ -s "$WORK/serve.json" ] && break
    if ! kill -0 "$SERVER" 2> /dev/null; then
        cat "$WORK/serve.err" >&2
        exit 1
    fi
    sleep 0.5
done
if [ ! -s "$WORK/serve.json" ]; then
    echo "the server was not ready after 5 minutes" >&2
    exit 1
fi

# shellcheck disable=SC2086
python -m lightbsr.benchmarks.serve_load --model "$MODEL" --grpc "127.0.0.1:$GRPC" --requests $REQUESTS \
    --sizes $SIZES --concurrency $CONCURRENCY \
    --note "Model: $WEIGHTS." \
    --note "Server: lightbsr serve -m MODEL --device cpu (one instance, max batch 4, dynamic batching), run by $SERVE_PYTHON; clients: tritonclient gRPC, one connection per client thread, in the process that also runs the local Upscaler." \
    --note "Made by: bash benchmarks/scripts/serve_load.sh (REQUESTS='$REQUESTS' SIZES='$SIZES' CONCURRENCY='$CONCURRENCY')." \
    ${NOTE:+--note "$NOTE"} \
    --json "$OUT/$NAME.json" --markdown "$OUT/$NAME.md" > /dev/null

kill -TERM "$SERVER"
status=0
wait "$SERVER" || status=$?
trap - EXIT
echo "- On SIGTERM after the run the server finished its requests and exited with status $status ($(tail -1 "$WORK/serve.err"))." >> "$OUT/$NAME.md"
echo "wrote $OUT/$NAME.json $OUT/$NAME.md; server exit status $status"
[ "$status" = 0 ]
