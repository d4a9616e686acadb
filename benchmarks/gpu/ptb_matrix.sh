#!/usr/bin/env bash
# The whole PTB matrix on one GPU, several runs sharing the device (issue #13), as ONE
# prepared command for a lent GPU machine with a hard wall-clock budget. It trains every
# variant of CONFIG with `smim reproduce --parallel N --device cuda`, stops training at
# TRAIN_S seconds (SIGTERM: every run checkpoints), evaluates what it reached with the
# quick settings below, and packs timings and results into OUT (a few files, no weights).
#
#   bash benchmarks/gpu/ptb_matrix.sh DATA_DIR OUT [CONFIG] [TRAIN_S] [PARALLEL] [EPOCHS]
#
# On the device machine (no install: PYTHONPATH=. with the image's torch), with the PTB
# files carried in an ignored folder of the checkout, e.g. .gpu-data/ptb/{train,valid,test}.txt:
#   bash benchmarks/gpu/ptb_matrix.sh .gpu-data $OUT benchmarks/reproduce/ptb-gpu-check.json 330 13 30
# Tested on the CPU with a tiny config: DEVICE=cpu bash benchmarks/gpu/ptb_matrix.sh ... (tests/test_gpu_script.py).
set -uo pipefail
DATA=$1; OUT=$2; CONFIG=${3:-benchmarks/reproduce/ptb-gpu-check.json}
TRAIN_S=${4:-330}; PAR=${5:-13}; EPOCHS=${6:-30}; DEVICE=${DEVICE:-cuda}; EVAL_S=${EVAL_S:-150}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
RUNS="$OUT/work/runs"; LOG="$OUT/log.txt"
t0=$(date +%s)
{
  echo "# ptb_matrix.sh $*  (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u))"
  $PY -c "import torch, os; print('torch', torch.__version__, '| device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', '| cpus', os.cpu_count())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} >>"$LOG" 2>&1
# 1. training, all runs at once (up to PAR), stopped at TRAIN_S (each run checkpoints on SIGTERM)
timeout --signal=TERM --kill-after=60 "$TRAIN_S" $PY -m sentencemim.cli reproduce "$CONFIG" --device "$DEVICE" \
  --parallel "$PAR" --data-dir "$DATA" --runs-dir "$RUNS" --max-epochs "$EPOCHS" --no-eval >>"$LOG" 2>&1
echo "# training phase ended with status $? after $(( $(date +%s) - t0 )) s" >>"$LOG"
# 2. quick evaluation of every run's best checkpoint, all at once, then the page
timeout --signal=TERM --kill-after=30 "$EVAL_S" $PY -m sentencemim.cli reproduce "$CONFIG" --device "$DEVICE" \
  --parallel "$PAR" --data-dir "$DATA" --runs-dir "$RUNS" --eval-only --no-report >>"$LOG" 2>&1
echo "# evaluation phase ended with status $? after $(( $(date +%s) - t0 )) s" >>"$LOG"
# 3. what comes back: per-run records (metrics, sessions, evaluations; no weights), one archive
$PY - "$RUNS" "$OUT/summary.json" >>"$LOG" 2>&1 <<'PYEOF'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {}
for d in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
    m = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()] \
        if (d / "metrics.jsonl").exists() else []
    train = [r for r in m if r["kind"] == "train"]
    valid = [r for r in m if r["kind"] == "valid"]
    a = json.loads((d / "analysis.json").read_text()) if (d / "analysis.json").exists() else None
    summary[d.name] = {"steps": train[-1]["step"] if train else 0, "epochs": valid[-1]["epoch"] if valid else 0,
                       "tokens_per_s_last": train[-1]["tokens_per_s"] if train else None,
                       "best_valid_loss": min((r["loss"] for r in valid), default=None),
                       "evaluated_step": a and a.get("step"), "eval_wall_s": a and a.get("wall_s")}
out.write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PYEOF
tar -czf "$OUT/runs.tar.gz" -C "$OUT/work" --exclude='*.pt' runs 2>>"$LOG"
rm -rf "$OUT/work"
echo "# done after $(( $(date +%s) - t0 )) s" >>"$LOG"
