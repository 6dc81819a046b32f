#!/usr/bin/env bash
# The embedded demo (`make demo`): a synthetic world of coloured shapes, tiny random-init towers and LLM,
# MG-LLaVA pretrain -> SFT -> export through the real xtuner CLI -> benchmark-format evaluation (tools/test.py),
# then the held-out questions answered by the export, by type.
# Everything is generated under .demo/ ; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.demo
rm -rf "$DEMO/work"
mkdir -p "$DEMO"
start=$(date +%s)
echo "== generating the synthetic world and the tiny models"
python -m mg_llava.demo.world "$DEMO/world" --num-train "${DEMO_NUM_TRAIN:-6000}" --num-heldout "${DEMO_NUM_HELDOUT:-200}" > "$DEMO/world.log"
python -m mg_llava.demo.tiny_assets "$DEMO/assets" --world "$DEMO/world" > "$DEMO/assets.log"
EXPORT_ARGS="--fp32" EVAL_ARGS="--no-progress" bash script/pipeline.sh configs/demo/mg_llava_demo_pretrain.py configs/demo/mg_llava_demo_sft.py \
  "$DEMO/work" > "$DEMO/pipeline.log" 2>&1 || { tail -n 40 "$DEMO/pipeline.log"; echo "demo: training pipeline failed (log: $DEMO/pipeline.log)"; exit 1; }
grep -E "Iter\(train\)" "$DEMO/pipeline.log" | sed -n '1p;$p' || true
echo "== trained, exported and evaluated in $(( $(date +%s) - start )) s"
echo "== held-out split in benchmark formats, scored by mg_llava.evaluation (tools/test.py; $DEMO/work/eval)"
sed -n '/^| name/,$p' "$DEMO/work/eval/summary.md"
echo "== held-out questions by type"
python -m mg_llava.demo.evaluate "$DEMO/work/export" "$DEMO/world" --predictions "$DEMO/heldout_predictions.jsonl"
