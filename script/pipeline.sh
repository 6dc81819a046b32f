#!/usr/bin/env bash
# One-shot pipeline: pretrain -> SFT (pretrain checkpoint wired in) -> export -> evaluation, stopping at the
# first failure.
#
#   script/pipeline.sh PRETRAIN_CFG SFT_CFG [WORK_DIR]
#
# Launch mode, by environment:
#   (default)            one process:          python -m xtuner.tools.train
#   NPROC_PER_NODE=N     N local processes:    torchrun (NNODES/NODE_RANK/ADDR/PORT honoured)
#   SLURM=1              inside an allocation: srun python -m xtuner.tools.train --launcher slurm
#   DEEPSPEED=deepspeed_zero2 (or a json)      passed as --deepspeed
#   EXPORT_ARGS="--fp32" extra args for pth_to_hf; SEED (default 2024)
#   SKIP_EVAL=1          stop after the export (else the SFT config's `evaluation` benchmarks run on it)
#   EVAL_ARGS="..."      extra args for tools/test.py (e.g. "--dtype fp32 --no-progress")
# `xtuner train` always exits 0, even on a crash, so we call the modules directly (real exit codes)
# and also check that each stage left its checkpoint.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0"; exit 2
fi
PRETRAIN_CFG=$1; SFT_CFG=$2; WORK_DIR=${3:-work_dirs/pipeline}
SEED=${SEED:-2024}
DS_ARGS=(); [ -n "${DEEPSPEED:-}" ] && DS_ARGS=(--deepspeed "$DEEPSPEED")
TRAIN_PY=$(python -c 'import xtuner.tools.train as m; print(m.__file__)')

train() {  # train CONFIG WORK_DIR [extra args...]
  local cfg=$1 wd=$2; shift 2
  if [ -n "${SLURM:-}" ]; then
    srun python -u "$TRAIN_PY" "$cfg" --work-dir "$wd" --launcher slurm --seed "$SEED" "${DS_ARGS[@]}" "$@"
  elif [ "${NPROC_PER_NODE:-1}" -gt 1 ]; then
    torchrun --nproc-per-node="$NPROC_PER_NODE" --nnodes="${NNODES:-1}" --node-rank="${NODE_RANK:-0}" \
      --master-addr="${ADDR:-127.0.0.1}" --master-port="${PORT:-29500}" \
      "$TRAIN_PY" "$cfg" --work-dir "$wd" --launcher pytorch --seed "$SEED" "${DS_ARGS[@]}" "$@"
  else
    python -u "$TRAIN_PY" "$cfg" --work-dir "$wd" --seed "$SEED" "${DS_ARGS[@]}" "$@"
  fi
  if [ ! -f "$wd/last_checkpoint" ]; then
    echo "pipeline: $cfg produced no checkpoint in $wd (see its log); stopping." >&2; exit 1
  fi
}

echo "== [1/4] pretrain: $PRETRAIN_CFG"
train "$PRETRAIN_CFG" "$WORK_DIR/pretrain"
PRETRAIN_CKPT=$(cat "$WORK_DIR/pretrain/last_checkpoint")

echo "== [2/4] instruction tuning: $SFT_CFG (pretrained_pth=$PRETRAIN_CKPT)"
train "$SFT_CFG" "$WORK_DIR/sft" --cfg-options "model.pretrained_pth=$PRETRAIN_CKPT"
SFT_CKPT=$(cat "$WORK_DIR/sft/last_checkpoint")

echo "== [3/4] export: $SFT_CKPT -> $WORK_DIR/export"
python -m xtuner.tools.model_converters.pth_to_hf "$SFT_CFG" "$SFT_CKPT" "$WORK_DIR/export" ${EXPORT_ARGS:-}
test -f "$WORK_DIR/export/mg_llava_config.json" || { echo "pipeline: export failed" >&2; exit 1; }
if [ -z "${SKIP_EVAL:-}" ]; then
  echo "== [4/4] evaluation: $WORK_DIR/export -> $WORK_DIR/eval"
  # shellcheck disable=SC2086
  bash "$(dirname "$0")/eval.sh" "$SFT_CFG" "$WORK_DIR/export" "$WORK_DIR/eval" ${EVAL_ARGS:-}
fi
echo "pipeline: done -> $WORK_DIR/export"
