#!/usr/bin/env bash
# The Genixer demo (`make demo-genixer`): a low-label experiment in the demo world. Only the first 600 of the
# world's 6000 training images are labelled. A model instruction-tuned on them (from `make demo`'s stage-1
# checkpoint) is fine-tuned as a data generator on the same labels and writes `Question: … Answer: …` about 3000
# fresh, unlabelled images of the world (tools/generate_data.py). The judge is `make demo`'s model (it learnt the
# world from all 6000 labelled training images, and never saw the fresh ones): the stand-in for the paper's
# stronger off-the-shelf judge. It scores each sample by round trip (tools/filter_data.py judge --score answer:
# its own probability of the generated answer to the generated question; this 4-layer LLM does not learn
# Genixer's quoted Yes/No judge prompt within a demo's budget, see docs/performance.md) and the kept ones are mixed
# into the labelled data (tools/mix_data.py). The same recipe trained on labelled + generated is then compared with
# labelled only on the held-out questions; the world's scenes say how many generated QA are true before and after
# the filter. `make demo` runs first when its model is missing. Everything is written under .demo/genixer/.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.demo; OUT=$DEMO/genixer; C=configs/demo; IMAGES=$OUT/images
BAND=${BAND:-"0.5 1.0"}  # the judge finds the generated answer more likely than not
# shellcheck source=script/_demo.sh
source script/_demo.sh
JUDGE=$DEMO/work/export
demo_start "$OUT" "$JUDGE/mg_llava_config.json"
step() { echo "   $1 ($(since) s)"; }
train_and_export() {  # train_and_export CONFIG STAGE WHAT
  train "$1" "$OUT/work/$2" >> "$log" 2>&1 || fail "$3"
  export_stage "$1" "$OUT/work/$2"
  step "trained and exported"
}

echo "== the labelled images, the generator's training data, the unlabelled images"
python -m mg_llava.demo.genixer data "$DEMO/world" "$OUT"
python -m mg_llava.demo.genixer boxes "$OUT/boxes.json" "$OUT/boxes.json" "$OUT/generator.json"

echo "== labelled only: instruction tuning on the labelled images ($log)"
train_and_export $C/genixer_demo_labelled.py labelled "the labelled-only SFT"

echo "== the generator: the labelled model fine-tuned on Genixer's format"
train_and_export $C/genixer_demo_generator.py generator "the generator SFT"

echo "== generation on the unlabelled images"
python tools/generate_data.py "$OUT/work/generator/export" --images "$OUT/unlabelled.jsonl" \
  --image-folder "$IMAGES" --box-file "$OUT/boxes.json" --task common --max-new-tokens 24 \
  --batch-size 32 --out "$OUT/generated.json" --no-progress 2>> "$log" || fail "generation"
step "generated"

echo "== judge filter (make demo's model; its probability of the generated answer in [${BAND/ /, }])"
# shellcheck disable=SC2086
python tools/filter_data.py judge "$JUDGE" --score answer --data "$OUT/generated.json" \
  --image-folder "$IMAGES" --box-file "$OUT/boxes.json" --band $BAND --batch-size 32 \
  --out "$OUT/kept.json" --no-progress 2>> "$log" || fail "the judge filter"
python tools/mix_data.py --sft "$OUT/labelled.json" --add "$OUT/kept.json" --all --out "$OUT/mixed.json" \
  --box-file "$OUT/boxes.json" --generated-box-file "$OUT/boxes.json"
step "filtered and mixed"

echo "== labelled + generated: the same recipe on the mix"
train_and_export $C/genixer_demo_mixed.py mixed "the SFT on the mix"

echo "== generated precision and held-out accuracy"
python -m mg_llava.demo.genixer report "$DEMO/world" "$OUT/generated.json" "$OUT/kept.json" \
  "$OUT/work/labelled/export" "$OUT/work/mixed/export"
