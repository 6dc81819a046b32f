# Sourced by script/pipeline.sh and script/llava_mod_pipeline.sh: `train` runs one stage, in the launch mode the
# environment asks for, with a real exit code and a check that it left a checkpoint.
#   NPROC_PER_NODE=N (torchrun; NNODES/NODE_RANK/ADDR/PORT honoured) | SLURM=1 (srun) | one process (default)
#   DEEPSPEED=deepspeed_zero2 (or a json) passed as --deepspeed; SEED (default 2024)
# `xtuner train` always exits 0, even on a crash, so the module is called directly.
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

export_and_evaluate() {  # export_and_evaluate CONFIG CKPT WORK_DIR STEP_EXPORT STEP_EVAL
  # pth_to_hf into WORK_DIR/export (EXPORT_ARGS), then CONFIG's `evaluation` benchmarks on it (EVAL_ARGS;
  # SKIP_EVAL=1 skips them).
  local cfg=$1 ckpt=$2 wd=$3
  echo "== [$4] export: $ckpt -> $wd/export"
  # shellcheck disable=SC2086
  python -m xtuner.tools.model_converters.pth_to_hf "$cfg" "$ckpt" "$wd/export" ${EXPORT_ARGS:-}
  test -f "$wd/export/mg_llava_config.json" || { echo "pipeline: export failed" >&2; exit 1; }
  if [ -z "${SKIP_EVAL:-}" ]; then
    echo "== [$5] evaluation: $wd/export -> $wd/eval"
    # shellcheck disable=SC2086
    bash "$(dirname "${BASH_SOURCE[0]}")/eval.sh" "$cfg" "$wd/export" "$wd/eval" ${EVAL_ARGS:-}
  fi
}
