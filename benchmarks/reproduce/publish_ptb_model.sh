#!/usr/bin/env bash
# Publish the PTB sMIM (512) of the paper-schedule run as models/ptb-smim512 (issue #13),
# once its training has ended and `smim reproduce` has evaluated it (analysis.json beside
# the run, which the model card reads for its test numbers).
#
#   bash benchmarks/reproduce/publish_ptb_model.sh [RUN] [DATA_DIR]
#       RUN       default runs/ptb-paper/mim-512-s0
#       DATA_DIR  default ../shared/data (the folder holding ptb/)
#
# Steps: export the best checkpoint with its model card; refuse a model over 50 MB (the
# repository's limit for its one set of weights); point the README's latent-space examples
# at models/ptb-smim512 (they name the lost run runs/ptb-mim512-step4500, and an AE that is
# not committed) and rerun them to rewrite their outputs (tests/readme_examples.py --write);
# retake the screenshots of `smim serve` in docs/serve with this model; rank WikiQA and TrecQA
# answers with it and generate a few answers (benchmarks/qa_results/ptb-smim512-*, for the
# QA page). What it leaves to a person: the README's prose about those outputs, the QA page's
# section on this model, and the commit.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/ptb-paper/mim-512-s0}
DATA=${2:-../shared/data}
OUT=models/ptb-smim512
LIMIT=$((50 * 1000 * 1000))

[ -d "$RUN" ] || { echo "publish: no run directory $RUN" >&2; exit 2; }
[ -f "$DATA/ptb/valid.txt" ] || { echo "publish: no $DATA/ptb/valid.txt (give the data folder as the second argument)" >&2; exit 2; }
[ -f "$RUN/analysis.json" ] || echo "publish: warning: $RUN has no analysis.json yet, so the model card will have no test numbers (run smim reproduce first)" >&2

echo "== 1/5 export $RUN -> $OUT"
smim export "$RUN" --out "$OUT" --force
size=$(du -cb "$OUT"/* | tail -1 | cut -f1)
echo "   $OUT: $size bytes"
if [ "$size" -gt "$LIMIT" ]; then
    echo "publish: $OUT is $size bytes, over the 50 MB limit" >&2
    exit 1
fi
grep -q "^## Test numbers" "$OUT/README.md"

echo "== 2/5 README examples -> $OUT"
python - "$OUT" <<'EOF'
import re, sys
from pathlib import Path
out = sys.argv[1]
p = Path("README.md")
s = p.read_text()
s = s.replace("runs/ptb-mim512-step4500", out)
s = re.sub(r" \\\n\s+--ae runs/ptb-ae512-latent-model\n", "\n", s)  # one set of weights: no AE beside it
p.write_text(s)
EOF
grep -q "runs/ptb-mim512-step4500\|--ae runs/" README.md && { echo "publish: README still names the old run" >&2; exit 1; }
python tests/readme_examples.py --write

echo "== 3/5 screenshots of smim serve -> docs/serve"
python -m sentencemim.serve.browser "$OUT" --index "$DATA/ptb/valid.txt" --out docs/serve --metric cosine

echo "== 4/5 question answering with $OUT (text written as PTB: lowercase, numbers as N, no punctuation)"
QA=benchmarks/qa_results
for data in wikiqa trecqa; do
    smim qa rank "$OUT" --data $data --data-dir "$DATA" --split test --runs 10 --variant all --ptb-text \
        --json "$QA/ptb-smim512-$data-both.json"
done
for q in "how are glacier caves formed ?" "who is the president of the united states" \
         "what is the capital of france" "when was the battle of hastings" "how does a water pump work"; do
    echo "== $q"
    smim qa answer "$OUT" "$q" --show-decoded --ptb-text
done 2>&1 | tee "$QA/ptb-smim512-answers.txt"

echo "== 5/5 check"
python -m pytest -q tests/test_readme_examples.py
echo "done. Now: rewrite the README's prose under the examples (it describes the old run's outputs),"
echo "add the QA results ($QA/ptb-smim512-*) to docs/results/qa.md, read $OUT/README.md,"
echo "and commit $OUT, README.md, docs/serve and $QA once."
