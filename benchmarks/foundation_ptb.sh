#!/usr/bin/env bash
# The foundation's end-to-end check on real PTB (docs/foundation-ptb.md):
#   1. sMIM (latent 16, paper's PTB settings) for 300 steps, validation every 100;
#   2. the same run interrupted by SIGINT after ~60 s, then --resume'd to 300 steps;
#   3. the per-step training losses of 1 and 2 compared; smim evaluate on run 1.
# usage: bash benchmarks/foundation_ptb.sh DATA_DIR [OUT_DIR]
set -euo pipefail
DATA=${1:?data dir holding ptb/}
OUT=${2:-runs/foundation-ptb}
ARGS=(--corpus ptb --data-dir "$DATA" --objective mim --latent-dim 16 --max-steps 300 --eval-every 100 --log-every 1)
rm -rf "$OUT"; mkdir -p "$OUT"
time smim train "${ARGS[@]}" --out "$OUT/full" 2> "$OUT/full.log"
set +e
timeout -s INT 60 smim train "${ARGS[@]}" --out "$OUT/split" 2> "$OUT/split.log"
echo "interrupted run exited with $?"
set -e
smim train --out "$OUT/split" --resume 2>> "$OUT/split.log"
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def losses(run):
    recs = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}, \
           [(r["step"], round(r["loss"], 3), round(r["rec_per_sentence"], 3)) for r in recs if r["kind"] == "valid"], \
           [r for r in recs if r.get("event") == "interrupted"]
full, vfull, _ = losses("full")
split, _, intr = losses("split")
diff = max(abs(full[s] - split[s]) for s in full)
print(f"interrupted at step {intr[0]['step'] if intr else '?'} ({intr[0]['signal'] if intr else ''}); "
      f"steps compared: {len(full)} vs {len(split)}; max |loss difference| = {diff:.3g}")
print("validation (step, MIM loss, reconstruction NLL/sentence):", vfull)
PY
smim evaluate "$OUT/full" --split test --json "$OUT/eval-test.json"
