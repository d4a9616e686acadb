"""smim serve's JSON API (FastAPI TestClient, in-process): every operation against the
library it wraps, and every class of bad request -> a 4xx with a one-line reason."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from sentencemim import SentenceMIM  # noqa: E402
from sentencemim.errors import UserError  # noqa: E402
from sentencemim.qa import Ranker, generate_answers  # noqa: E402
from sentencemim.qa_data import Question  # noqa: E402
from sentencemim.serve.app import create_app  # noqa: E402
from sentencemim.serve.latentmap import build_map, pca_2d  # noqa: E402
from sentencemim.serve.ops import Service  # noqa: E402

from test_api import LINES  # noqa: E402


@pytest.fixture(scope="module")
def m(overfit):
    return SentenceMIM(*overfit, info={"train": {"objective": "mim", "corpus": "tiny"}, "step": 300})


@pytest.fixture(scope="module")
def lmap(m):
    return build_map(LINES, m.encode(LINES)[0], "pca")


@pytest.fixture
def client(m, lmap):
    return TestClient(create_app(Service(m, lmap, "tiny-overfit"), rate=0))


@pytest.fixture
def reference(overfit):
    """The same model through the plain Python API, for comparison."""
    return SentenceMIM(*overfit, on_oov=None)


def ok(client, path, body=None):
    r = client.get(path) if body is None else client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------- operations
def test_info_describes_model_and_index(client):
    d = ok(client, "/api/info")
    assert d["latent_dim"] == 8 and d["objective"] == "mim" and d["step"] == 300 and d["corpus"] == "tiny"
    assert d["index"]["sentences"] == 6 and d["index"]["projection"] == "pca"


def test_reconstruct_every_mode_and_decoder_equals_the_library(client, reference):
    d = ok(client, "/api/reconstruct", {"sentences": LINES})
    assert [r["text"] for r in d["rows"]] == LINES  # the overfit model reconstructs its corpus
    assert [r["length"] for r in d["rows"]] == [len(s.split()) for s in LINES]
    assert d["z"] == "z = posterior mean (M)" and d["decoding"] == "greedy, at most 50 tokens" and d["oov"] == []
    decoders = [{"method": "beam", "beam_size": 3, "length_penalty": 0.5},
                {"method": "sample", "temperature": 1.5, "top_k": 5, "top_p": 0.9, "ban_unk": True, "max_len": 7}]
    for mode, scale in (("sample", 10.0), ("perturb", 50.0), ("mean", 10.0)):
        for dec in decoders:
            d = ok(client, "/api/reconstruct", {"sentences": LINES[:3], "mode": mode, "scale": scale, "seed": 4,
                                                "decoding": dec})
            kw = {"max_len": 50, **dec}
            assert [r["text"] for r in d["rows"]] == reference.reconstruct(LINES[:3], mode, scale, seed=4, **kw)
    assert "sampling at temperature 1.5, top-k 5, top-p 0.9, <unk> banned, at most 7 tokens" == d["decoding"]
    d = ok(client, "/api/reconstruct", {"sentences": ["the zebra sat on the zebra", "the Cat sat"]})
    assert d["oov"] == ["zebra", "Cat"]  # listed once each, in order; read as <unk>


def test_interpolate_every_step_with_its_length(client, reference):
    a, b = LINES[5], LINES[4]  # 2 and 9 words
    d = ok(client, "/api/interpolate", {"a": a, "b": b, "steps": 6, "codes": "mean"})
    assert [s["t"] for s in d["steps"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    texts = [s["text"] for s in d["steps"]]
    assert texts == reference.interpolate(a, b, 6, "mean", max_len=50)
    assert texts[0] == a and texts[-1] == b
    assert [s["length"] for s in d["steps"]] == [len(t.split()) for t in texts]
    d = ok(client, "/api/interpolate", {"a": a, "b": b, "steps": 4, "seed": 3, "decoding": {"method": "sample"}})
    assert [s["text"] for s in d["steps"]] == reference.interpolate(a, b, 4, "sample", seed=3, method="sample",
                                                                    max_len=50)
    assert "sampled" in d["z"]


def test_sample_from_the_prior(client, reference):
    d = ok(client, "/api/sample", {"n": 7, "std": 1.0, "seed": 2, "decoding": {"method": "sample", "top_p": 0.8}})
    assert [s["text"] for s in d["samples"]] == reference.sample(7, 1.0, seed=2, method="sample", top_p=0.8,
                                                                 max_len=50)
    assert d["prior"] == "z ~ N(0, 1^2 I)" and len(d["samples"]) == 7


def test_qa_answers_and_ranking_equal_the_qa_module(client, overfit):
    model, vocab = overfit
    d = ok(client, "/api/qa/answer", {"question": "the cat sat", "lengths": ["short", "long"], "seed": 5})
    assert d["answers"] == generate_answers(model, vocab, "the cat sat".split(), ["short", "long"], True, 5, 0)
    assert [a["length"] for a in d["answers"]] == ["short", "long"]
    cands = ["on the mat", "a dog ran", "cats and dogs"]
    for variant in ("sample", "mean", "ae"):
        d = ok(client, "/api/qa/rank", {"question": "the cat sat", "answers": cands, "variant": variant, "seed": 1})
        q = Question("the cat sat".split(), [c.split() for c in cands], [0, 0, 0])
        expected = Ranker(model, vocab, [q]).scores(variant, torch.Generator().manual_seed(1))[0]
        scores = [c["score"] for c in d["candidates"]]
        np.testing.assert_allclose(scores, expected, rtol=1e-6)
        assert [c["rank"] for c in d["candidates"]] == list(np.argsort(np.argsort(expected, kind="stable")) + 1)
        assert "lower is better" in d["score"]


def test_neighbors_and_map(client, m, lmap):
    d = ok(client, "/api/neighbors", {"text": LINES[2], "k": 3})
    first = d["neighbors"][0]
    assert first["sentence"] == LINES[2] and first["distance"] == pytest.approx(0, abs=1e-5)
    assert [n["rank"] for n in d["neighbors"]] == [1, 2, 3]
    dists = [n["distance"] for n in d["neighbors"]]
    assert dists == sorted(dists)
    means = m.encode(LINES)[0]
    brute = np.linalg.norm(means - means[2], axis=1)
    assert [n["row"] for n in d["neighbors"]] == list(np.argsort(brute, kind="stable")[:3])
    pts = ok(client, "/api/map")["points"]
    assert [p["sentence"] for p in pts] == LINES
    assert d["query_xy"] == pytest.approx([pts[2]["x"], pts[2]["y"]], abs=1e-5)  # the query lands on itself
    assert ok(client, "/api/neighbors", {"text": LINES[2], "k": 2, "metric": "cosine"})["neighbors"][0]["row"] == 2


def test_pca_agrees_with_an_eigendecomposition():
    x = np.random.default_rng(0).normal(size=(40, 5)) * np.array([5, 3, 1, 0.5, 0.1])
    center, comps, xy, explained = pca_2d(x)
    evals, evecs = np.linalg.eigh(np.cov(x.T, bias=True))
    top = np.argsort(evals)[::-1][:2]
    np.testing.assert_allclose(explained, evals[top] / evals.sum(), rtol=1e-9)
    for i in range(2):
        assert abs(comps[i] @ evecs[:, top[i]]) == pytest.approx(1.0)  # the same axis, up to sign
    np.testing.assert_allclose(xy, (x - x.mean(0)) @ comps.T)


def test_umap_is_used_when_installed(monkeypatch):
    import sys
    import types
    calls = {}

    class FakeUMAP:  # stands in for umap.UMAP: records how it is called
        def __init__(self, **kw):
            calls["init"] = kw

        def fit_transform(self, x):
            calls["fit"] = x.shape
            return x[:, :2] * 2

        def transform(self, x):
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    codes = np.random.default_rng(1).normal(size=(30, 4))
    lm = build_map([f"s{i}" for i in range(30)], codes, "auto", max_points=25, seed=3)
    assert lm.method == "umap" and calls["init"] == {"n_components": 2, "random_state": 3} and calls["fit"] == (25, 4)
    assert len(set(lm.shown)) == 25 and "25 of 30" in lm.what
    np.testing.assert_allclose(lm.project(codes[:1]), codes[:1, :2] * 2)
    assert build_map(["a"] * 5, codes[:5], "auto").method == "pca"  # too few points for UMAP
    monkeypatch.setitem(sys.modules, "umap", None)  # not installed
    assert build_map(["a"] * 30, codes, "auto").method == "pca"
    with pytest.raises(UserError, match="umap-learn"):
        build_map(["a"] * 30, codes, "umap")


def test_page_static_files_and_openapi(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="panel-map"' in r.text
    assert "http" not in r.text.replace("http://www.w3.org", "")  # nothing loaded from elsewhere: no CDN
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/api/reconstruct".split("/")[-1] in js.text
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/api/info", "/api/reconstruct", "/api/interpolate", "/api/sample",
                                  "/api/qa/answer", "/api/qa/rank", "/api/neighbors", "/api/map"}
    steps = spec["components"]["schemas"]["InterpolateRequest"]["properties"]["steps"]
    assert (steps["minimum"], steps["maximum"]) == (2, 50)  # the limits are documented
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


# ---------------------------------------------------------------------- bad requests
BAD = [
    # (path, body, status, words expected in the reason)
    ("/api/reconstruct", {"sentences": []}, 422, "sentences"),
    ("/api/reconstruct", {"sentences": [""]}, 422, "empty text"),
    ("/api/reconstruct", {"sentences": ["   "]}, 422, "empty text"),
    ("/api/reconstruct", {"sentences": ["a dog"] * 21}, 422, "at most 20"),
    ("/api/reconstruct", {"sentences": ["dog " * 101]}, 422, "too long"),
    ("/api/reconstruct", {"sentences": ["x" * 2001]}, 422, "2000"),
    ("/api/reconstruct", {}, 422, "sentences: Field required"),
    ("/api/reconstruct", {"sentences": ["a dog"], "colour": "red"}, 422, "colour"),
    ("/api/reconstruct", {"sentences": "a dog"}, 422, "list"),
    ("/api/reconstruct", {"sentences": [3]}, 422, "string"),
    ("/api/reconstruct", {"sentences": ["a dog"], "mode": "median"}, 422, "mode"),
    ("/api/reconstruct", {"sentences": ["a dog"], "scale": -1}, 422, "scale"),
    ("/api/reconstruct", {"sentences": ["a dog"], "seed": -1}, 422, "seed"),
    ("/api/reconstruct", {"sentences": ["a dog"], "seed": "1"}, 422, "integer"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"method": "nucleus"}}, 422, "decoding.method"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"temperature": 0}}, 422, "decoding.temperature"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"top_p": 1.5}}, 422, "decoding.top_p"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"top_k": -1}}, 422, "decoding.top_k"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"beam_size": 0}}, 422, "decoding.beam_size"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"max_len": 201}}, 422, "decoding.max_len"),
    ("/api/reconstruct", {"sentences": ["a dog"], "decoding": {"ban_unk": "yes"}}, 422, "boolean"),
    ("/api/interpolate", {"a": "a dog", "b": ""}, 422, "b: empty text"),
    ("/api/interpolate", {"a": "a dog"}, 422, "b: Field required"),
    ("/api/interpolate", {"a": "a dog", "b": "a bird", "steps": 1}, 422, "steps"),
    ("/api/interpolate", {"a": "a dog", "b": "a bird", "steps": 51}, 422, "steps"),
    ("/api/interpolate", {"a": "a dog", "b": "a bird", "codes": "median"}, 422, "codes"),
    ("/api/sample", {"n": 0}, 422, "n:"),
    ("/api/sample", {"n": 51}, 422, "n:"),
    ("/api/sample", {"n": 2.5}, 422, "integer"),
    ("/api/sample", {"std": -0.1}, 422, "std"),
    ("/api/qa/answer", {"question": " "}, 422, "empty text"),
    ("/api/qa/answer", {"question": "why", "lengths": []}, 422, "lengths"),
    ("/api/qa/answer", {"question": "why", "lengths": ["huge"]}, 422, "lengths"),
    ("/api/qa/rank", {"question": "why", "answers": ["because"]}, 422, "answers"),
    ("/api/qa/rank", {"question": "why", "answers": ["because", ""]}, 422, "empty text"),
    ("/api/qa/rank", {"question": "why", "answers": ["a", "b"], "variant": "best"}, 422, "variant"),
    ("/api/neighbors", {"text": "a dog", "k": 0}, 422, "k:"),
    ("/api/neighbors", {"text": "a dog", "metric": "manhattan"}, 422, "metric"),
    ("/api/neighbors", {"text": ""}, 422, "empty text"),
]


def _one_line_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


@pytest.mark.parametrize("path,body,status,words", BAD)
def test_bad_requests_are_4xx_with_one_line(client, path, body, status, words):
    assert words in _one_line_error(client.post(path, json=body), status)


@pytest.mark.parametrize("raw,words", [(b'{"std": NaN}', "finite"), (b'{"n": NaN}', "integer"), (b'{"std": Infinity}', "finite"),
                                       (b'{"n": 3', "not valid JSON"), (b"n=3", "not valid JSON"),
                                       (b"", "Field required"), (b"[1, 2]", "valid dictionary")])
def test_bodies_that_are_not_valid_requests(client, raw, words):
    r = client.post("/api/sample", content=raw, headers={"Content-Type": "application/json"})
    assert words in _one_line_error(r, 422)


def test_routes_methods_and_library_refusals(client, m):
    assert "Not Found" in _one_line_error(client.get("/api/nothing"), 404)
    assert "Method Not Allowed" in _one_line_error(client.get("/api/reconstruct"), 405)
    no_index = TestClient(create_app(Service(m, None), rate=0))
    assert "--index" in _one_line_error(no_index.get("/api/map"), 404)
    assert "--index" in _one_line_error(no_index.post("/api/neighbors", json={"text": "a dog"}), 404)
    assert ok(no_index, "/api/info")["index"] is None
    service = Service(m, None)
    service.sample = lambda *a: (_ for _ in ()).throw(UserError("refused by the library\nsecond line"))
    r = TestClient(create_app(service, rate=0)).post("/api/sample", json={})
    assert _one_line_error(r, 400) == "refused by the library second line"


def test_request_size_limit(m):
    client = TestClient(create_app(Service(m, None), max_body=1000, rate=0))
    big = {"sentences": ["a dog ran"] * 150}  # > 1000 bytes
    assert "too large" in _one_line_error(client.post("/api/reconstruct", json=big), 413)

    def chunks():  # no Content-Length: the limit still holds while reading
        for _ in range(20):
            yield b" " * 100
    r = client.post("/api/sample", content=chunks(), headers={"Content-Type": "application/json"})
    assert "too large" in _one_line_error(r, 413)
    assert client.post("/api/sample", json={"n": 1}).status_code == 200  # small requests pass


def test_rate_limit(m):
    client = TestClient(create_app(Service(m, None), rate=0.5, burst=3))
    codes = [client.get("/api/info").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/api/info")
    assert "rate limit" in _one_line_error(r, 429) and int(r.headers["Retry-After"]) >= 1
    assert client.get("/").status_code == 200  # the page itself is not rate-limited


def test_serve_cli_refuses_bad_options(tmp_path, capsys):
    from sentencemim.cli import main
    assert main(["serve", str(tmp_path / "missing"), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smim serve: error:") and "\n" not in err
    assert main(["serve", str(tmp_path / "missing"), "--codes", "x.npy"]) == 2
    assert "--codes needs --index" in capsys.readouterr().err
    for flag, value in (("--rate-limit", "nan"), ("--rate-limit", "-1"), ("--burst", "0"), ("--max-body-kb", "0"),
                        ("--seed", "-1")):
        assert main(["serve", str(tmp_path / "missing"), flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert flag in err and "\n" not in err


def test_json_numbers_say_what_they_are(client):
    """Every response names its code, prior or score next to the numbers."""
    d = ok(client, "/api/sample", {"n": 1})
    assert json.dumps(d).count("N(0, 0.1^2 I)") == 1
    assert "Euclidean" in ok(client, "/api/neighbors", {"text": "a dog ran"})["distance"]
