"""Answer-selection loaders on tiny files, malformed ones included."""

import pickle

import pytest

from sentencemim.errors import UserError
from sentencemim.qa_data import (convert_yahoocqa, filter_questions, load_questions, normalize,
                                 read_trecqa_csv, read_tsv, read_yahoocqa_pickle)

from conftest import shared_corpus

WIKIQA = ("how are caves formed ?\tA cave is a hole .\t1\n"
          "how are caves formed ?\tIce is cold .\t0\n"
          "who is bob\tBob is a man .\t0\n"
          "who is bob\tHe -LRB- Bob -RRB- ran .\t0\n"
          "what is x\tx is x .\t1\n")

TRECQA = ('qtext,label,atext\n'
          'What is Wicca ?,1,"Wicca is a `` religion \'\' ."\n'
          'What is Wicca ?,0,"It rained , again ."\n'
          'Who ran ?,0,Nobody ran .\n'
          'Who ran ?,1,Bob ran .\n')


def test_read_tsv_groups_contiguous_rows(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text(WIKIQA)
    qs = read_tsv(p)
    assert [len(q.answers) for q in qs] == [2, 2, 1]
    assert qs[0].text == "how are caves formed ?".split() and qs[0].labels == [1, 0]
    assert qs[1].answers[1] == "He ( Bob ) ran .".split()  # PTB escapes undone
    assert qs[1].source == f"{p}:3"
    # standard filter: >= 1 correct and >= 1 wrong: only the first question
    assert [q.text[0] for q in filter_questions(qs)] == ["how"]
    assert len(load_questions(str(p), filter="none")) == 3 and len(load_questions(str(p))) == 1
    assert [q.text[0] for q in filter_questions(qs, "correct")] == ["how", "what"]
    with pytest.raises(UserError, match="unknown filter"):
        filter_questions(qs, "some")


@pytest.mark.parametrize("line, message", [
    ("q\ta\n", ":1: expected 3 tab-separated columns"),
    ("q\ta\t1\textra\n", ":1: expected 3 tab-separated columns"),
    ("q\ta\tyes\n", ":1: label must be 0 or 1"),
    ("q\ta\t1\n \ta\t0\n", ":2: empty question"),
    ("q\ta\t1\nq\t \t0\n", ":2: empty answer"),
])
def test_read_tsv_malformed(tmp_path, line, message):
    p = tmp_path / "bad.tsv"
    p.write_text(line)
    with pytest.raises(UserError, match=message):
        read_tsv(p)


def test_read_tsv_bad_bytes_and_missing(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_bytes(b"q\ta\t1\nq\t\xff\t0\n")
    with pytest.raises(UserError, match=r"bad.tsv:2: invalid UTF-8"):
        read_tsv(p)
    with pytest.raises(UserError, match="file not found"):
        read_tsv(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("\n")
    with pytest.raises(UserError, match="no question-answer rows"):
        read_tsv(tmp_path / "empty.tsv")


def test_read_trecqa_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(TRECQA)
    qs = read_trecqa_csv(p)
    assert len(qs) == 2 and qs[0].labels == [1, 0] and qs[1].labels == [0, 1]
    assert qs[0].answers[0] == 'Wicca is a " religion " .'.split()
    assert qs[0].answers[1] == "It rained , again .".split()


@pytest.mark.parametrize("text, message", [
    ("question,label,answer\nq,1,a\n", ":1: expected the header"),
    ("qtext,label,atext\nq,1\n", ":2: expected 3 CSV fields"),
    ("qtext,label,atext\nq,1,a\nq,2,b\n", ":3: label must be 0 or 1"),
])
def test_read_trecqa_malformed(tmp_path, text, message):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(UserError, match=message):
        read_trecqa_csv(p)


def _yahoo_env():
    return {"train": {"how do i cook rice ?": [["boil it in water", 1], ["buy a car", 0]]},
            "dev": {"why is the sky blue": [["scattering of light", 1], ["cheese", 0], ["no", 0]]},
            "test": {"best pizza topping": [["pepperoni", 1], ["a\tb\nc", 0]],
                     "is it raining": [["yes", 1], ["maybe", 0]]}}


def test_yahoocqa_pickle_needs_opt_in_and_converts(tmp_path, capsys):
    p = tmp_path / "env.pkl"
    p.write_bytes(pickle.dumps(_yahoo_env()))
    with pytest.raises(UserError, match="add --allow-pickle") as e:
        read_yahoocqa_pickle(p)
    assert "or convert it once with" not in str(e.value)  # the advice is not the command just run
    with pytest.raises(UserError, match="nope.pkl: file not found"):  # a missing file is said first
        read_yahoocqa_pickle(tmp_path / "nope.pkl")
    splits = read_yahoocqa_pickle(p, allow_pickle=True)
    assert "warning: unpickling" in capsys.readouterr().err
    assert len(splits["test"]) == 2 and splits["dev"][0].labels == [1, 0, 0]
    assert splits["test"][0].answers[1] == ["a", "b", "c"]  # tabs/newlines cannot break the TSV
    out = convert_yahoocqa(p, tmp_path / "yahoocqa", allow_pickle=True)
    assert [x.name for x in out] == ["train.tsv", "dev.tsv", "test.tsv"]
    again = load_questions("yahoocqa", "test", data_dir=tmp_path)
    assert [(q.text, q.answers, q.labels) for q in again] == \
           [(q.text, q.answers, q.labels) for q in splits["test"]]
    assert len(load_questions(str(p), "valid", allow_pickle=True)) == 1


@pytest.mark.parametrize("env, message", [
    ([1, 2], "expected a dict with keys train, dev, test"),
    ({"train": {}, "dev": {}}, "expected a dict with keys train, dev, test"),
    ({"test": {"q": [["a"]]}}, r"\['test'\] question 0 \('q'\), candidate 0: expected \[answer"),
    ({"test": {"q": [["a", 3]]}}, "candidate 0: label must be 0 or 1"),
    ({"test": []}, "must map question"),
    ({"dev": {}}, r"\[dev\]: no question-answer pairs"),
])
def test_yahoocqa_malformed(tmp_path, env, message):
    if isinstance(env, dict) and len(env) == 1:
        env = {**_yahoo_env(), **env}
    p = tmp_path / "env.pkl"
    p.write_bytes(pickle.dumps(env))
    with pytest.raises(UserError, match=message):
        read_yahoocqa_pickle(p, allow_pickle=True)
    p.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a readable pickle"):
        read_yahoocqa_pickle(p, allow_pickle=True)


def test_missing_yahoocqa_says_how_to_convert(tmp_path):
    with pytest.raises(UserError, match="convert-yahoocqa"):
        load_questions("yahoocqa", "test", data_dir=tmp_path)
    with pytest.raises(UserError, match="wikiqa/WikiQASent-test.txt"):
        load_questions("wikiqa", "test", data_dir=tmp_path)
    with pytest.raises(UserError, match="unknown QA data set|split must be"):
        load_questions("wikiqa", "nosplit", data_dir=tmp_path)


def test_normalize():
    assert normalize("a @-@ b 1 @,@ 000 -LRB- x -RRB- `` q ''") == ["a-b", "1,000", "(", "x", ")", '"', "q", '"']


def test_real_sets_have_the_documented_counts():
    root = shared_corpus("wikiqa")
    wiki = load_questions("wikiqa", "test", data_dir=root, filter="none")
    assert len(wiki) == 633 and sum(len(q.labels) for q in wiki) == 6165
    assert len(filter_questions(wiki)) == 237 and len(filter_questions(wiki, "correct")) == 243
    shared_corpus("trecqa")
    trec = load_questions("trecqa", "test", data_dir=root)
    assert len(trec) == 68


def test_ptb_text_writes_tokens_as_mikolovs_ptb():
    from sentencemim.qa_data import ptb_text
    got = ptb_text("The 1,000 cats ( big ) cost $ 5.5 % , isn't it ? -3 1990s".split())
    assert got == ["the", "N", "cats", "big", "cost", "$", "N", "isn't", "it", "N", "1990s"]
