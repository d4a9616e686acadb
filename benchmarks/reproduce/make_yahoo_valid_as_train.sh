#!/usr/bin/env bash
# Build a Yahoo corpus folder from the splits that exist locally (no Yahoo train.txt):
#   train.txt = first 9000 lines of yahoo/valid.txt, valid.txt = its last 1000, test.txt = yahoo/test.txt
# Usage: make_yahoo_valid_as_train.sh DATA_DIR OUT_PARENT   (writes OUT_PARENT/yahoo-valid-as-train/)
# Keep OUT_PARENT outside the repository's tracked files (runs/ is ignored).
set -euo pipefail
data=${1:?DATA_DIR holding yahoo/valid.txt and yahoo/test.txt}
out=${2:?OUT_PARENT}/yahoo-valid-as-train
mkdir -p "$out"
head -n 9000 "$data/yahoo/valid.txt" > "$out/train.txt"
tail -n 1000 "$data/yahoo/valid.txt" > "$out/valid.txt"
cp "$data/yahoo/test.txt" "$out/test.txt"
wc -l "$out"/*.txt
