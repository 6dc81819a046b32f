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
# Each stage: script/_train.sh (real exit codes: `xtuner train` always exits 0; checks the stage left a checkpoint).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0"; exit 2
fi
PRETRAIN_CFG=$1; SFT_CFG=$2; WORK_DIR=${3:-work_dirs/pipeline}
# shellcheck source=script/_train.sh
source "$(dirname "$0")/_train.sh"

echo "== [1/4] pretrain: $PRETRAIN_CFG"
train "$PRETRAIN_CFG" "$WORK_DIR/pretrain"
PRETRAIN_CKPT=$(cat "$WORK_DIR/pretrain/last_checkpoint")

echo "== [2/4] instruction tuning: $SFT_CFG (pretrained_pth=$PRETRAIN_CKPT)"
train "$SFT_CFG" "$WORK_DIR/sft" --cfg-options "model.pretrained_pth=$PRETRAIN_CKPT"
SFT_CKPT=$(cat "$WORK_DIR/sft/last_checkpoint")

export_and_evaluate "$SFT_CFG" "$SFT_CKPT" "$WORK_DIR" "3/4" "4/4"
echo "pipeline: done -> $WORK_DIR/export"
