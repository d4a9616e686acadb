#!/usr/bin/env bash
# QA measurement for docs/results/qa.md (issue #7). Run from the repository root with the
# venv active. Training (~31 min wall each, both at once on a shared 2-core CPU):
#
#   python benchmarks/qa_build_corpus.py --data-dir /work/shared/data --out runs/qa-corpus
#   for obj in mim ae; do
#     OMP_NUM_THREADS=1 smim train --corpus runs/qa-corpus --objective $obj --latent-dim 512 \
#       --encoder-unk-rate 0.2 --max-steps 1200 --max-length 48 --length-policy truncate \
#       --max-vocab 16000 --embedding-dim 256 --hidden-dim 256 --log-every 100 \
#       --eval-every 400 --eval-max-sentences 500 --out runs/qa-$obj &
#   done; wait
#
# Then this script: ranking on the WikiQA and TrecQA test sets (10 runs), baselines,
# and generated answers for a few WikiQA test questions.
set -euo pipefail
DATA=${DATA:-/work/shared/data}
OUT=${OUT:-benchmarks/qa_results}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for data in wikiqa trecqa; do
  for filter in both correct; do
    [ "$data" = trecqa ] && [ "$filter" = correct ] && continue
    smim qa baselines --data $data --data-dir "$DATA" --filter $filter --json "$OUT/baselines-$data-$filter.json"
    for m in mim ae; do
      smim qa rank runs/qa-$m --data $data --data-dir "$DATA" --split test --runs 10 \
        --variant all --filter $filter --no-baselines --json "$OUT/$m-$data-$filter.json"
    done
  done
done
for m in mim ae; do
  for q in "how are glacier caves formed ?" "who is the president of the united states" \
           "what is the capital of france" "when was the battle of hastings" "how does a water pump work"; do
    echo "== $m: $q"
    smim qa answer runs/qa-$m "$q" --show-decoded
  done
done 2>&1 | tee "$OUT/answers.txt"
