#!/usr/bin/env bash
# Evaluate a checkpoint or an export on the benchmarks of CONFIG's `evaluation` dict (tools/test.py).
#
#   script/eval.sh CONFIG MODEL [WORK_DIR] [extra tools/test.py args...]
#
# MODEL: an export folder (holds mg_llava_config.json) or a training checkpoint (.pth / DeepSpeed dir /
# work dir). WORK_DIR defaults to work_dirs/<config name>/eval. Launch mode, by environment:
#   (default) one process;  NPROC_PER_NODE=N  torchrun with N processes;  SLURM=1  srun (inside an allocation)
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,9p' "$0"; exit 2
fi
CONFIG=$1; MODEL=$2; shift 2
WORK_DIR=work_dirs/$(basename "${CONFIG%.py}")/eval
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then WORK_DIR=$1; shift; fi
if [ -f "$MODEL/mg_llava_config.json" ]; then SRC=(--export "$MODEL"); else SRC=(--checkpoint "$MODEL"); fi
TEST_PY="$(cd "$(dirname "$0")/.." && pwd)/tools/test.py"
if [ -n "${SLURM:-}" ]; then
  srun python -u "$TEST_PY" "$CONFIG" "${SRC[@]}" --work-dir "$WORK_DIR" --launcher slurm "$@"
elif [ "${NPROC_PER_NODE:-1}" -gt 1 ]; then
  torchrun --nproc-per-node="$NPROC_PER_NODE" --master-port="${PORT:-29501}" \
    "$TEST_PY" "$CONFIG" "${SRC[@]}" --work-dir "$WORK_DIR" --launcher pytorch "$@"
else
  python -u "$TEST_PY" "$CONFIG" "${SRC[@]}" --work-dir "$WORK_DIR" "$@"
fi
