#!/usr/bin/env bash
# The LLaVA-MoD demo (`make demo-distill`): the demo's MG-LLaVA model (`make demo`'s export, trained first when
# absent) is distilled into a smaller student (the teacher's LLM cut to half its layers; the teacher's towers,
# frozen) through the four LLaVA-MoD stages (script/llava_mod_pipeline.sh: adaptor -> D2D -> D2S with up-cycling
# -> preference distillation on pairs from the world), with LLaVA-MoD's small data budget: the teacher learnt
# from the world's 6300 SFT samples, the student gets the first 200 (15 epochs per KD stage). The ablation: the same student, from the same adaptor
# checkpoint, trained by plain SFT for the same steps on the same data (twin configs, no teacher). Then a table
# of held-out accuracy per question type for the teacher, the SFT student and each distilled stage.
# Everything is written under .demo/distill/.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.demo; OUT=$DEMO/distill; C=configs/demo
# shellcheck source=script/_demo.sh
source script/_demo.sh
demo_start "$OUT" "$DEMO/work/export/mg_llava_config.json"
echo "== the student's LLM, its 200 labelled samples and the preference pairs"
python -m mg_llava.demo.distill student "$DEMO/work/export" "$OUT/student_llm"
python -m mg_llava.demo.distill data "$DEMO/world" "$OUT" --num-samples 200

echo "== LLaVA-MoD: adaptor -> D2D -> D2S (up-cycled) -> preference distillation ($log)"
SKIP_EVAL=1 EXPORT_ARGS=--fp32 bash script/llava_mod_pipeline.sh $C/llava_mod_demo_{adaptor,d2d,d2s,pd}.py \
  "$OUT/work" > "$log" 2>&1 || fail "the LLaVA-MoD pipeline"
echo "   done in $(since) s"

echo "== the SFT ablation: same student, adaptor checkpoint, steps and data; no teacher"
prev=$(cat "$OUT/work/adaptor/last_checkpoint")
for stage in sft_dense sft_sparse sft_chosen; do
  train "$C/llava_mod_demo_$stage.py" "$OUT/work/$stage" --cfg-options "model.pretrained_pth=$prev" \
    >> "$log" 2>&1 || fail "$stage"
  prev=$(cat "$OUT/work/$stage/last_checkpoint")
done
echo "   done in $(since) s"

echo "== exports of the intermediate stages and of the SFT student"
export_stage $C/llava_mod_demo_d2d.py "$OUT/work/d2d"
export_stage $C/llava_mod_demo_d2s.py "$OUT/work/d2s"
export_stage $C/llava_mod_demo_sft_chosen.py "$OUT/work/sft_chosen"
echo "   trained and exported in $(since) s"

echo "== held-out questions by type (accuracy %)"
python -m mg_llava.demo.distill report "$DEMO/world" "teacher=$DEMO/work/export" \
  "SFT student=$OUT/work/sft_chosen/export" "D2D=$OUT/work/d2d/export" "D2S=$OUT/work/d2s/export" \
  "D2S+PD=$OUT/work/export"
