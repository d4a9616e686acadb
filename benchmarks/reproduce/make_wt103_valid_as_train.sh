#!/usr/bin/env bash
# Build a WikiText-103 corpus folder from the splits that exist locally (no train.txt):
#   the units are paragraphs, as in the 200k-line training sample (corpora.sample_lines):
#   non-empty lines that are not section headers (` = ... = `);
#   train.txt = all such lines of wikitext-103/valid.txt but the last 200, valid.txt = those 200,
#   test.txt  = all such lines of wikitext-103/test.txt (headers removed, as from the training sample).
# Usage: make_wt103_valid_as_train.sh DATA_DIR OUT_PARENT   (writes OUT_PARENT/wikitext-103-valid-as-train/)
# Keep OUT_PARENT outside the repository's tracked files (runs/ is ignored).
set -euo pipefail
data=${1:?DATA_DIR holding wikitext-103/valid.txt and wikitext-103/test.txt}
out=${2:?OUT_PARENT}/wikitext-103-valid-as-train
mkdir -p "$out"
paragraphs() { grep -v -E '^[[:space:]]*$' "$1" | grep -v -E '^[[:space:]]*= ' || true; }
paragraphs "$data/wikitext-103/valid.txt" > "$out/.valid-paragraphs"
n=$(wc -l < "$out/.valid-paragraphs")
if [ "$n" -le 200 ]; then echo "only $n paragraphs in $data/wikitext-103/valid.txt" >&2; exit 1; fi
head -n $((n - 200)) "$out/.valid-paragraphs" > "$out/train.txt"
tail -n 200 "$out/.valid-paragraphs" > "$out/valid.txt"
rm "$out/.valid-paragraphs"
paragraphs "$data/wikitext-103/test.txt" > "$out/test.txt"
wc -l "$out"/*.txt
