"""`smim qa ...`: question answering without fine-tuning (paper sec. 4.6).

    smim qa rank MODEL --data wikiqa|trecqa|yahoocqa|PATH --split test --runs 10 [--data-dir DIR]
    smim qa answer MODEL "question" --length short|medium|long
    smim qa baselines --data wikiqa --split test          (word overlap, random)
    smim qa convert-yahoocqa env.pkl OUT_DIR --allow-pickle

`rank` prints P@1 / MRR / MAP (mean and std over runs) and saves them as JSON
(--json, default MODEL/qa-<data>-<split>.json when MODEL is a directory).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .cliargs import number
from .config import SEED_MAX
from .errors import UserError
from .rundir import check_output_file, write_atomic

DATA_HELP = ("wikiqa, trecqa, yahoocqa (files under --data-dir), or a file: .csv (qtext,label,atext), "
             ".pkl (YahooCQA pickle, needs --allow-pickle), else question<TAB>answer<TAB>label")


def _questions(args):
    from .qa_data import load_questions
    qs = load_questions(args.data, args.split, args.data_dir, args.allow_pickle, args.filter)
    if not qs:
        raise UserError(f"{args.data} ({args.split}): no questions left after --filter {args.filter}")
    style = _text_style(args)
    if style:
        for q in qs:
            q.text = style(q.text)
            q.answers = [style(a) for a in q.answers]
    n = sum(len(q.labels) for q in qs)
    print(f"{args.data} {args.split}: {len(qs)} questions, {n} candidates (--filter {args.filter})"
          f"{', ' + _style_name(args) if style else ''}", file=sys.stderr)
    return qs


def _text_style(args):
    """--ptb-text or --lowercase as a function on token lists (None: text as it is)."""
    from .qa_data import ptb_text
    if getattr(args, "ptb_text", False):
        return ptb_text
    if getattr(args, "lowercase", False):
        return lambda tokens: [w.lower() for w in tokens]
    return None


def _style_name(args) -> str:
    return ("PTB-style (lowercase, numbers as N, punctuation dropped)" if getattr(args, "ptb_text", False)
            else "lowercased" if getattr(args, "lowercase", False) else "as written")


def _vocab_notes(vocab, tokens: int, oov: int) -> None:
    """What the model's vocabulary makes of the QA text, on stderr."""
    from .qa import NO_SEPARATOR, has_separator
    print(f"out-of-vocabulary tokens (read as <unk>): {oov} of {tokens} ({100 * oov / max(tokens, 1):.1f}%)",
          file=sys.stderr)
    if not has_separator(vocab):
        print(f"note: {NO_SEPARATOR}", file=sys.stderr)


def _fmt(name, m) -> str:
    sd = lambda k: f" ± {m[k + '_std']:.4f}" if m.get("runs", 1) > 1 else ""
    return (f"{name:<22} P@1 {m['P@1']:.4f}{sd('P@1')}  MRR {m['MRR']:.4f}{sd('MRR')}  "
            f"MAP {m['MAP']:.4f}{sd('MAP')}  ({m['questions']} questions, {m.get('runs', 1)} run(s))")


def _baselines(qs) -> dict:
    from .qa import length_scores, overlap_scores, random_ranking, rank_metrics
    labels = [q.labels for q in qs]
    return {"random (expected)": random_ranking(qs),
            "longest answer first": rank_metrics(length_scores(qs), labels),
            "word overlap": rank_metrics(overlap_scores(qs, weighted=False), labels),
            "idf word overlap": rank_metrics(overlap_scores(qs, weighted=True), labels)}


def cmd_rank(args) -> int:
    from .modelio import load_model
    from .qa import NO_SEPARATOR, VARIANTS, Ranker, has_separator
    check_output_file(args.json, "--json")
    model, vocab, info = load_model(args.model, args.checkpoint)
    qs = _questions(args)
    objective = info.get("train", {}).get("objective")
    variants = {"auto": ["ae" if objective == "ae" else "sample"], "all": list(VARIANTS)}.get(
        args.variant, [args.variant])
    t0 = time.time()
    ranker = Ranker(model, vocab, qs, args.batch_size)
    oov = sum(vocab.count_oov(a) for q in qs for a in q.answers + [q.text])
    tokens = sum(len(a) for q in qs for a in q.answers + [q.text])
    _vocab_notes(vocab, tokens, oov)
    report = {"model": str(args.model), "objective": objective, "data": args.data, "split": args.split,
              "filter": args.filter, "seed": args.seed, "text": _style_name(args), "oov_tokens": oov,
              "tokens": tokens, "separator_in_vocabulary": has_separator(vocab),
              **({} if has_separator(vocab) else {"note": NO_SEPARATOR}), "results": {}}
    for v in variants:
        report["results"][v] = ranker.evaluate(v, args.runs, args.seed)
        print(_fmt(f"{objective or 'model'} [{v}]", report["results"][v]))
    report["seconds"] = round(time.time() - t0, 1)
    if not args.no_baselines:
        report["baselines"] = _baselines(qs)
        for name, m in report["baselines"].items():
            print(_fmt(name, m))
    out = args.json or (Path(args.model) / f"qa-{Path(args.data).stem}-{args.split}.json"
                        if Path(args.model).is_dir() else None)
    if out:
        write_atomic(out, json.dumps(report, indent=2))
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_baselines(args) -> int:
    check_output_file(args.json, "--json")
    qs = _questions(args)
    report = {"data": args.data, "split": args.split, "filter": args.filter, "baselines": _baselines(qs)}
    for name, m in report["baselines"].items():
        print(_fmt(name, m))
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2))
    return 0


def cmd_answer(args) -> int:
    from .modelio import load_model
    from .qa import generate_answers
    from .qa_data import normalize
    question = normalize(args.question)
    style = _text_style(args)  # after normalize, which reads PTB escapes such as -LSB- in their own case
    if style:
        question = style(question)
    if not question:
        raise UserError("the question is empty")
    model, vocab, _ = load_model(args.model, args.checkpoint)
    _vocab_notes(vocab, len(question), vocab.count_oov(question))
    lengths = ("short", "medium", "long") if args.length == "all" else (args.length,)
    for r in generate_answers(model, vocab, question, lengths, sample=not args.mean, seed=args.seed):
        none = "[no answer: no ? decoded]" if r["answer_by"] == "after the first ?" else "[no answer decoded]"
        print(f"({r['length']}, {r['unk']} <unk>) {r['answer'] or none}")
        if args.show_decoded:
            print(f"    decoded: {r['decoded']}")
    return 0


def cmd_convert(args) -> int:
    from .qa_data import convert_yahoocqa
    for p in convert_yahoocqa(args.pickle, args.out, args.allow_pickle):
        print(f"wrote {p}")
    return 0


def register(subparsers) -> None:
    """Add the `qa` command group to the smim parser."""
    qa = subparsers.add_parser("qa", help="question answering without fine-tuning (paper sec. 4.6)",
                               description=__doc__.split("\n\n")[0])
    sub = qa.add_subparsers(dest="qa_command", required=True)

    def data_flags(p):
        p.add_argument("--data", required=True, help=DATA_HELP)
        p.add_argument("--split", default="test", help="train, dev (valid) or test (default test)")
        p.add_argument("--data-dir", help="folder holding wikiqa/, trecqa/, yahoocqa/ (default: $SENTENCEMIM_DATA)")
        p.add_argument("--allow-pickle", action="store_true", help="allow reading a YahooCQA .pkl (runs code from it)")
        p.add_argument("--filter", default="both", choices=("both", "correct", "none"),
                       help="keep questions with >= 1 correct and >= 1 wrong candidate (both, default), "
                            ">= 1 correct (correct: WikiQA's usual 243 test questions), or all (none)")
        p.add_argument("--json", metavar="FILE", help="save the metrics here (JSON)")

    r = sub.add_parser("rank", help="rank candidate answers; P@1, MRR, MAP")
    r.add_argument("model", help="run directory, model directory or checkpoint file")
    data_flags(r)
    r.add_argument("--runs", type=number(int, ge=1), default=10, metavar="N",
                   help="draws of z to average over (paper: 10; default: 10)")
    r.add_argument("--variant", default="auto", choices=("auto", "all", "sample", "mean", "ae"),
                   help="sample: paper's sMIM score; mean: posterior means; ae: means, sigma=1 "
                        "(auto: ae for AE models, else sample)")
    r.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of a run directory (default: best)")
    r.add_argument("--batch-size", type=number(int, ge=1), default=128, metavar="N",
                   help="sentences per encoder batch (default: 128)")
    r.add_argument("--seed", type=number(int, ge=0, le=SEED_MAX), default=0, metavar="N",
                   help="random seed of the z draws (default: 0)")
    r.add_argument("--no-baselines", action="store_true", help="skip the word-overlap and random baselines")
    r.add_argument("--lowercase", action="store_true", help="lowercase questions and answers")
    r.add_argument("--ptb-text", action="store_true",
                   help="write questions and answers as Mikolov's PTB does (lowercase, numbers as N, no punctuation), "
                        "for a model trained on PTB")
    r.set_defaults(func=cmd_rank)

    b = sub.add_parser("baselines", help="word-overlap and random ranking on a QA set")
    data_flags(b)
    b.set_defaults(func=cmd_baselines)

    a = sub.add_parser("answer", help="generate answers from Q ? <unk> x 5/10/15")
    a.add_argument("model", help="run directory, model directory or checkpoint file")
    a.add_argument("question", help="the question (tokenized like the training text)")
    a.add_argument("--length", default="all", choices=("short", "medium", "long", "all"),
                   help="answer length: short, medium, long (5, 10, 15 <unk> placeholders) or all (default: all)")
    a.add_argument("--mean", action="store_true", help="decode from the posterior mean instead of a sample")
    a.add_argument("--seed", type=number(int, ge=0, le=SEED_MAX), default=0, metavar="N",
                   help="random seed of the sampled code (default: 0)")
    a.add_argument("--show-decoded", action="store_true", help="also print the whole decoded sentence")
    a.add_argument("--lowercase", action="store_true", help="lowercase the question")
    a.add_argument("--ptb-text", action="store_true",
                   help="write the question as Mikolov's PTB does (lowercase, numbers as N, no punctuation)")
    a.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of a run directory (default: best)")
    a.set_defaults(func=cmd_answer)

    c = sub.add_parser("convert-yahoocqa", help="YahooCQA env.pkl -> OUT/{train,dev,test}.tsv")
    c.add_argument("pickle", help="YahooCQA env.pkl")
    c.add_argument("out", help="folder for train.tsv, dev.tsv, test.tsv")
    c.add_argument("--allow-pickle", action="store_true", help="required: unpickling runs code from the file")
    c.set_defaults(func=cmd_convert)
