#!/usr/bin/env bash
# Genixer end to end: generator SFT -> export -> generation on unlabelled images -> judge filter -> mix into the
# SFT data -> SFT on the mix -> export -> evaluation, stopping at the first failure.
#
#   script/genixer_pipeline.sh GENERATOR_CFG SFT_CFG IMAGES [WORK_DIR]
#
# GENERATOR_CFG fine-tunes a trained model into a generator (configs/genixer/*; its data: the output of
# tools/build_generator_data.py). SFT_CFG is the recipe that gets the mix: its data_path is the SFT data the
# generated samples are mixed into, its pretrained_pth the stage-1 checkpoint. IMAGES: unlabelled images (a folder,
# or a jsonl of {id, image} with IMAGE_FOLDER). Environment (defaults):
#   TASK=agnostic  TEMPERATURE=0.2  GEN_SEED=0  MAX_NEW_TOKENS=256     generation (tools/generate_data.py)
#   JUDGE=<the generator's export>  BAND="0.5 0.7"  JUDGE_SCORE=p_yes   judge filter (tools/filter_data.py judge;
#                                                                       JUDGE may be a transformers VLM folder,
#                                                                       JUDGE_SCORE=answer: round trip)
#   NUM=8000 (or "all")  MIX_SEED=0                                     mixing (tools/mix_data.py)
#   BOX_FILE=<detector boxes of IMAGES>                                 MG-LLaVA: object tokens at generation,
#                                                                       judging and in the mix's box file
# Launch mode, DEEPSPEED, SEED, EXPORT_ARGS, SKIP_EVAL, EVAL_ARGS: as script/pipeline.sh; with NPROC_PER_NODE=N
# (or SLURM=1) generation and judging are sharded the same way.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,19p' "$0"; exit 2
fi
GEN_CFG=$1; SFT_CFG=$2; IMAGES=$3; WORK_DIR=${4:-work_dirs/genixer_pipeline}
# shellcheck source=script/_train.sh
source "$(dirname "$0")/_train.sh"
TOOLS="$(cd "$(dirname "$0")/.." && pwd)/tools"
BOX_ARGS=(); [ -n "${BOX_FILE:-}" ] && BOX_ARGS=(--box-file "$BOX_FILE")
IMG_ARGS=(); [ -n "${IMAGE_FOLDER:-}" ] && IMG_ARGS=(--image-folder "$IMAGE_FOLDER")

run_tool() {  # run_tool TOOL.py ARGS...: one process, torchrun or srun, as the training stages
  local tool=$TOOLS/$1; shift
  if [ -n "${SLURM:-}" ]; then
    srun python -u "$tool" "$@" --launcher slurm
  elif [ "${NPROC_PER_NODE:-1}" -gt 1 ]; then
    torchrun --nproc-per-node="$NPROC_PER_NODE" --master-port="${PORT:-29500}" "$tool" "$@" --launcher pytorch
  else
    python -u "$tool" "$@"
  fi
}

echo "== [1/7] generator: $GEN_CFG"
train "$GEN_CFG" "$WORK_DIR/generator"
python -m xtuner.tools.model_converters.pth_to_hf "$GEN_CFG" "$(cat "$WORK_DIR/generator/last_checkpoint")" \
  "$WORK_DIR/generator/export" ${EXPORT_ARGS:-}
GENERATOR=$WORK_DIR/generator/export
test -f "$GENERATOR/mg_llava_config.json" || { echo "genixer_pipeline: generator export failed" >&2; exit 1; }

echo "== [2/7] generation: $IMAGES"
run_tool generate_data.py "$GENERATOR" --images "$IMAGES" "${IMG_ARGS[@]}" "${BOX_ARGS[@]}" \
  --task "${TASK:-agnostic}" --temperature "${TEMPERATURE:-0.2}" --seed "${GEN_SEED:-0}" \
  --max-new-tokens "${MAX_NEW_TOKENS:-256}" --out "$WORK_DIR/generated.json" --no-progress
test -f "$WORK_DIR/generated.json" || { echo "genixer_pipeline: generation failed" >&2; exit 1; }
ROOT=${IMAGE_FOLDER:-$IMAGES}; [ -d "$IMAGES" ] || ROOT=${IMAGE_FOLDER:-$(dirname "$IMAGES")}

echo "== [3/7] judge filter: ${JUDGE:-$GENERATOR}, ${JUDGE_SCORE:-p_yes} in ${BAND:-0.5 0.7}"
# shellcheck disable=SC2086
run_tool filter_data.py judge "${JUDGE:-$GENERATOR}" --data "$WORK_DIR/generated.json" --image-folder "$ROOT" \
  "${BOX_ARGS[@]}" --band ${BAND:-0.5 0.7} --score "${JUDGE_SCORE:-p_yes}" --out "$WORK_DIR/kept.json" --no-progress
test -f "$WORK_DIR/kept.json" || { echo "genixer_pipeline: the judge filter failed" >&2; exit 1; }

echo "== [4/7] mix into the SFT data of $SFT_CFG"
read -r SFT_DATA SFT_BOXES < <(python -c "
from mmengine.config import Config
d = Config.fromfile('$SFT_CFG').train_dataloader.dataset
print(d.data_path, d.get('box_json_path') or '-')")
MIX_BOX_ARGS=(); SFT_EXTRA=(train_dataloader.dataset.data_path="$WORK_DIR/mixed.json")
if [ "$SFT_BOXES" != "-" ]; then
  [ -n "${BOX_FILE:-}" ] || { echo "genixer_pipeline: $SFT_CFG uses object boxes: set BOX_FILE" >&2; exit 1; }
  MIX_BOX_ARGS=(--box-file "$SFT_BOXES" --generated-box-file "$BOX_FILE")
  SFT_EXTRA+=(train_dataloader.dataset.box_json_path="$WORK_DIR/mixed.boxes.json")
fi
NUM_ARGS=(--num "${NUM:-8000}"); [ "${NUM:-8000}" = all ] && NUM_ARGS=(--all)
python "$TOOLS/mix_data.py" --sft "$SFT_DATA" --add "$WORK_DIR/kept.json" "${NUM_ARGS[@]}" \
  --seed "${MIX_SEED:-0}" --out "$WORK_DIR/mixed.json" "${MIX_BOX_ARGS[@]}"

echo "== [5/7] instruction tuning on the mix: $SFT_CFG"
train "$SFT_CFG" "$WORK_DIR/sft" --cfg-options "${SFT_EXTRA[@]}"
export_and_evaluate "$SFT_CFG" "$(cat "$WORK_DIR/sft/last_checkpoint")" "$WORK_DIR/sft" "6/7" "7/7"
echo "genixer_pipeline: done -> $WORK_DIR/sft/export"
