#!/usr/bin/env bash
# The project's one prepared GPU check (issue 11): run on a lent GPU, from the repository root, in <= 8 minutes
# (each step has its own timeout; they add up to 8 minutes: 120 + 90 + 90 + 60 + 60 + 60 s).
# Writes one JSON line per figure into ${OUT:-gpu_check_out}/gpu_check.jsonl (and each step's log next to it):
#   1. workloads A and B of shared/spec/upstream_gpu_baseline.md, padded (timing/train_step.py), + B with
#      liger-kernel and torch.compile when liger is installed
#   2. the LLaVA-665K-like length mix on workload B's model: padded, length-grouped, packed (timing/length_mix.py)
#   3. a ZeRO-2 and a ZeRO-3 tiny run through `xtuner train --deepspeed` (the tiny config on a fresh tiny world)
#   4. the batched evaluation vs batch 1 (timing/eval_generate.py --tiny: the engine; a real-size model's
#      generation is covered by workload timings, not repeated here)
# Install first (the wheelhouse, ../shared/tools/gpu_wheelhouse.sh, travels as .whl):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD:$PYTHONPATH
# then: bash timing/gpu_check.sh            (SMOKE=1: tiny sizes on CPU, to check the plumbing without a GPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
J=$OUT/gpu_check.jsonl
: > "$J"
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
note() { echo "[gpu_check $(( $(date +%s) - t0 )) s] $*" >&2; }
# run NAME TIMEOUT CMD...: the command's JSON lines (stdout) appended to $J, its stderr to $OUT/NAME.log; a failure
# is recorded as {"check": NAME, "error": ...} and the next check still runs
run() {
  local name=$1 limit=$2
  shift 2
  note "$name: $*"
  if timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"; then
    sed "s/^{/{\"check\": \"$name\", /" "$OUT/$name.out" >> "$J"
  else
    echo "{\"check\": \"$name\", \"error\": \"exit $? (see $name.log)\"}" >> "$J"
    tail -n 5 "$OUT/$name.log" >&2
  fi
}

if [ "${SMOKE:-0}" = 1 ]; then
  run train_step 300 $PY timing/train_step.py --tiny
  run length_mix 300 $PY timing/length_mix.py --tiny --samples 24
else
  $PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name())' \
    >&2 || exit 1
  run train_step 120 $PY timing/train_step.py --workload A --workload B
  if $PY -c 'import liger_kernel' 2>/dev/null; then
    run train_step_liger_compile 90 $PY timing/train_step.py --workload B --liger --compile
  fi
  run length_mix 90 $PY timing/length_mix.py
fi

# tiny world + models for the xtuner runs and the evaluation engine (seconds)
W=$OUT/run
mkdir -p "$W/.demo"
$PY -m mg_llava.demo.world "$W/.demo/world" --num-train 64 --num-heldout 8 > "$OUT/world.log" 2>&1
$PY -m mg_llava.demo.tiny_assets "$W/.demo/assets" --world "$W/.demo/world" > "$OUT/assets.log" 2>&1
if [ "${SMOKE:-0}" != 1 ]; then
  for z in zero2 zero3; do
    note "xtuner train --deepspeed deepspeed_$z"
    s=$(date +%s)
    (cd "$W" && timeout 60 xtuner train "$OLDPWD/configs/tiny/mg_llava_tiny_sft.py" --deepspeed "deepspeed_$z" \
       --work-dir "work_$z" --cfg-options train_cfg.max_epochs=1) > "$OUT/$z.log" 2>&1
    # xtuner exits 0 even when training failed: a checkpoint and no Traceback are the evidence
    ok=false
    if ! grep -q Traceback "$OUT/$z.log" && ls "$W/work_$z"/iter_*.pth >/dev/null 2>&1; then ok=true; fi
    echo "{\"check\": \"deepspeed_$z\", \"ok\": $ok, \"seconds\": $(( $(date +%s) - s )), \"last_loss\": \"$(grep -o 'loss: [0-9.]*' "$OUT/$z.log" | tail -1 | cut -d' ' -f2)\"}" >> "$J"
  done
fi
limit=60; [ "${SMOKE:-0}" = 1 ] && limit=300   # a busy CPU host is slower than a GPU host's CPU
run eval_generate $limit $PY timing/eval_generate.py --tiny
note "done: $J"
cat "$J"
