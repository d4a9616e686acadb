"""The page in a real browser: headless Chromium loads `smim serve`'s page over a tiny
model, runs a reconstruction, an interpolation and the latent map, and the test checks
what the page shows. Screenshots of each panel go to $SENTENCEMIM_SCREENSHOTS when it is
set (docs/serve/ was made that way), else to the test's temporary folder."""

import os
import tempfile

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

from sentencemim import SentenceMIM  # noqa: E402
from sentencemim.serve.browser import find_chromium, free_port, open_browser, start_server, tour  # noqa: E402

from test_api import LINES  # noqa: E402

BROWSER, DRIVER, REASON = find_chromium()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason=f"no headless browser test: {REASON}")]


@pytest.fixture(scope="module")
def server(overfit, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    model_dir = SentenceMIM(*overfit, info={"train": {"objective": "mim", "corpus": "six sentences"}}) \
        .save_pretrained(folder / "tiny-smim-six-sentences")
    index = folder / "index.txt"
    index.write_text("\n".join(LINES) + "\n")
    port = free_port()
    proc = start_server(str(model_dir), str(index), port)
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=30)


def test_page_shows_reconstruction_interpolation_and_map(server, tmp_path):
    out = os.environ.get("SENTENCEMIM_SCREENSHOTS") or tmp_path / "screenshots"
    with tempfile.TemporaryDirectory() as profile:
        drv = open_browser(BROWSER, DRIVER, profile)
        try:
            shown = tour(drv, server, out, sentences=LINES[:3], a=LINES[5], b=LINES[4],
                         question="the cat sat", candidates=["on the mat", "a dog ran"], query=LINES[2])
        finally:
            drv.quit()
    assert shown["info"].startswith("tiny-smim-six-sentences \u00b7 objective mim \u00b7 latent 8")
    assert "index: 6 sentences" in shown["info"]
    # reconstruct: the overfit model gives its sentences back, with their lengths
    assert shown["reconstruct"] == [[s, s, str(len(s.split()))] for s in LINES[:3]]
    assert shown["reconstruct_note"].startswith("z = posterior mean (M); greedy")
    # interpolate: 6 steps from a 2-word to a 9-word sentence, lengths shown as numbers and bars
    t, texts, lengths = zip(*[(r[0], r[1], int(r[2])) for r in shown["interpolate"]])
    assert t == ("0.00", "0.20", "0.40", "0.60", "0.80", "1.00")
    assert texts[0] == LINES[5] and texts[-1] == LINES[4]
    assert lengths == tuple(len(s.split()) for s in texts) and lengths[0] == 2 and lengths[-1] == 9
    assert shown["interpolate_bars"] == [round(100 * n / max(lengths)) for n in lengths]
    # sample and QA answered
    assert len(shown["sample"]) == 5 and "z ~ N(0, 0.1^2 I)" in shown["sample_note"]
    assert [r[0] for r in shown["qa_answer"]] == ["short", "medium", "long"]
    assert sorted(r[0] for r in shown["qa_rank"]) == ["1", "2"]
    # the map: every indexed sentence is a point; hovering shows one, clicking reconstructs it
    assert shown["map_points"] == 6 and shown["map_what"].startswith("PCA of the posterior means, 6 of 6")
    assert shown["map_hover"] in LINES
    assert shown["map_click"].startswith(f"{shown['map_hover']} \u2192 {shown['map_hover']}")
    assert shown["neighbors"][0] == LINES[2] + " (0.0000)"  # the query itself, at distance 0
    assert shown["map_highlighted"] == 5 and shown["map_query_marks"] == 1
    assert shown["map_error"] == ""
    for name in ("reconstruct", "interpolate", "sample", "qa", "map"):
        assert os.path.getsize(os.path.join(out, f"{name}.png")) > 1000
