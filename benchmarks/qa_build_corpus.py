"""Build the QA pre-training corpus folder (train/valid/test.txt) for `smim train --corpus`.

    python benchmarks/qa_build_corpus.py --data-dir /work/shared/data --out runs/qa-corpus

train.txt = WikiText-2 train, split into sentences
          + every WikiQA train candidate as "Q ? A"   (labels never read)
          + every TrecQA train candidate as "Q ? A"   (labels never read)
valid.txt = WikiText-2 valid sentences + WikiQA dev "Q ? A" lines
test.txt  = WikiText-2 test sentences
Sentences: WikiText-2 paragraphs (section headers " = ... = " dropped) are cut after
".", "!" or "?" when the next token starts with an upper-case letter, a digit or a
quote. All text goes through sentencemim.qa_data.normalize (WikiText @-@ joiners and
PTB escapes undone, case kept), the same function the QA loaders use.
"""

import argparse
import random
from pathlib import Path

from sentencemim.qa_data import normalize, qa_tokens, read_trecqa_csv, read_tsv


def sentences(path):
    for line in open(path, encoding="utf-8"):
        s = line.strip()
        if not s or s.startswith("= "):
            continue
        toks = normalize(s)
        cur = []
        for i, t in enumerate(toks):
            cur.append(t)
            nxt = toks[i + 1] if i + 1 < len(toks) else ""
            if t in (".", "!", "?") and (not nxt or nxt[0].isupper() or nxt[0].isdigit() or nxt[0] == '"'):
                yield cur
                cur = []
        if cur:
            yield cur


def qa_lines(questions):
    for q in questions:
        for a in q.answers:
            yield qa_tokens(q.text, a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--out", default="runs/qa-corpus")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    d, out = Path(a.data_dir), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wt = {s: [x for x in sentences(d / "wikitext-2" / f"{s}.txt") if len(x) >= 3] for s in ("train", "valid", "test")}
    wiki_train = list(qa_lines(read_tsv(d / "wikiqa" / "WikiQASent-train.txt")))
    trec_train = list(qa_lines(read_trecqa_csv(d / "trecqa" / "train.csv")))
    wiki_dev = list(qa_lines(read_tsv(d / "wikiqa" / "WikiQASent-dev.txt")))
    train = wt["train"] + wiki_train + trec_train
    random.Random(a.seed).shuffle(train)
    splits = {"train": train, "valid": wt["valid"] + wiki_dev, "test": wt["test"]}
    for s, lines in splits.items():
        (out / f"{s}.txt").write_text("".join(" ".join(x) + "\n" for x in lines), encoding="utf-8")
        print(f"{s}: {len(lines)} lines, {sum(map(len, lines))} words")
    print(f"train parts: wikitext-2 {len(wt['train'])}, wikiqa Q?A {len(wiki_train)}, trecqa Q?A {len(trec_train)}")


if __name__ == "__main__":
    main()
