# Sourced by the demos built on `make demo` (script/demo_distill.sh, script/demo_genixer.sh):
#   demo_start OUT NEEDED    runs script/demo.sh first when NEEDED (a file it makes) is missing, then empties OUT;
#                            sets `log` (OUT/pipeline.log) and the clock `since` reads
#   fail WHAT                the log's tail and a one-line reason, exit 1
#   export_stage CFG DIR     pth_to_hf of DIR/last_checkpoint into DIR/export (fp32), into the log
#   since                    seconds since demo_start
# shellcheck source=script/_train.sh
source "$(dirname "${BASH_SOURCE[0]}")/_train.sh"

demo_start() {
  if [ ! -f "$2" ]; then
    echo "== no $2: running the demo first (script/demo.sh)"
    bash "$(dirname "${BASH_SOURCE[0]}")/demo.sh"
  fi
  rm -rf "$1"
  mkdir -p "$1"
  log=$1/pipeline.log
  _demo_start=$(date +%s)
}

since() { echo $(( $(date +%s) - _demo_start )); }

fail() { tail -n 40 "$log"; echo "$(basename "$0" .sh): $1 failed (log: $log)"; exit 1; }

export_stage() {
  python -m xtuner.tools.model_converters.pth_to_hf "$1" "$(cat "$2/last_checkpoint")" "$2/export" --fp32 \
    >> "$log" 2>&1 || fail "the export of $2"
}
