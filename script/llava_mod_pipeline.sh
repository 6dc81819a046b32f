#!/usr/bin/env bash
# LLaVA-MoD end to end: adaptor init -> dense->dense KD -> dense->sparse KD (up-cycled at load) -> preference
# distillation -> export of the student -> evaluation, each stage starting from the previous one's checkpoint,
# stopping at the first failure.
#
#   script/llava_mod_pipeline.sh ADAPTOR_CFG D2D_CFG D2S_CFG PD_CFG [WORK_DIR]
#
# e.g. configs/llava_mod/qwen2_0_5b_{adaptor,d2d,d2s,pd}.py; the teacher is the configs' `model.teacher` (an
# export of this framework: `xtuner convert pth_to_hf` of e.g. configs/llava15/qwen2_7b_sft.py).
# Launch mode and the rest as script/pipeline.sh: NPROC_PER_NODE, SLURM=1, DEEPSPEED, SEED, EXPORT_ARGS,
# SKIP_EVAL=1, EVAL_ARGS; STAGE_ARGS="..." extra --cfg-options for every training stage.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
ADAPTOR_CFG=$1; D2D_CFG=$2; D2S_CFG=$3; PD_CFG=$4; WORK_DIR=${5:-work_dirs/llava_mod_pipeline}
# shellcheck source=script/_train.sh
source "$(dirname "$0")/_train.sh"
EXTRA=(); [ -n "${STAGE_ARGS:-}" ] && read -r -a EXTRA <<< "$STAGE_ARGS"
FIRST=(); [ ${#EXTRA[@]} -gt 0 ] && FIRST=(--cfg-options "${EXTRA[@]}")

echo "== [1/6] adaptor initialisation: $ADAPTOR_CFG"
train "$ADAPTOR_CFG" "$WORK_DIR/adaptor" "${FIRST[@]}"
PREV=$(cat "$WORK_DIR/adaptor/last_checkpoint")
n=2
for stage in d2d d2s pd; do
  case $stage in d2d) cfg=$D2D_CFG; what="dense->dense distillation";;
                 d2s) cfg=$D2S_CFG; what="dense->sparse distillation (up-cycling)";;
                 pd) cfg=$PD_CFG; what="preference distillation";; esac
  echo "== [$n/6] $what: $cfg (student from $PREV)"
  train "$cfg" "$WORK_DIR/$stage" --cfg-options "model.pretrained_pth=$PREV" "${EXTRA[@]}"
  PREV=$(cat "$WORK_DIR/$stage/last_checkpoint")
  n=$((n + 1))
done

export_and_evaluate "$PD_CFG" "$PREV" "$WORK_DIR" "5/6" "6/6"   # the student
echo "llava_mod_pipeline: done -> $WORK_DIR/export"
