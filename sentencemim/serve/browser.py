"""Drive `smim serve`'s page in headless Chromium: the browser test uses it, and it
retakes the screenshots in docs/serve/ with any model:

    python -m sentencemim.serve.browser MODEL --index FILE --out docs/serve [--lowercase]

It starts `python -m sentencemim.cli serve MODEL ...` on a free port of 127.0.0.1,
opens the page in Chromium (Debian's `chromium` + `chromium-driver`, through
selenium), runs a reconstruction, an interpolation, a sample, the QA panel and the
latent map (hover, click, nearest neighbours), saves one screenshot per panel and
returns what the page showed. Needs selenium (in the dev extra) and Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Without the background-networking flags a closed network refuses Chromium's connections.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,1400", "--hide-scrollbars")


def find_chromium() -> tuple[str | None, str | None, str]:
    """(browser, chromedriver, reason): paths, or None and why not."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install selenium; it is in the dev extra)"
    browser = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(x for x, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        return None, None, f"{missing} not found (Debian: apt-get install chromium chromium-driver)"
    return browser, driver, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, index: str | None, port: int, extra=(), timeout: float = 120.0) -> subprocess.Popen:
    """`smim serve` in a child process; returns once /api/info answers."""
    cmd = [sys.executable, "-m", "sentencemim.cli", "serve", str(model), "--port", str(port),
           "--log-level", "warning", *extra] + (["--index", str(index)] if index else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smim serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"smim serve did not answer within {timeout:.0f} s")


def open_browser(browser: str, driver: str, profile: str):
    from selenium import webdriver
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")  # a new, empty profile
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


def tour(drv, url: str, out_dir: str | Path | None = None, sentences=("the cat sat on the mat",),
         a: str = "a bird", b: str = "the mat was red and the cat was black", question: str = "the cat sat",
         candidates=("on the mat", "a dog ran"), query: str | None = None, metric: str = "l2",
         timeout: float = 60.0) -> dict:
    """Use every panel of the page at `url`; screenshots into out_dir (panel name .png)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(drv, timeout)
    find = drv.find_element
    shown: dict = {}

    def shot(name):
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(str(Path(out_dir) / f"{name}.png"))

    def fill(element_id, text):
        el = find(By.ID, element_id)
        el.clear()
        el.send_keys(text)

    def tab(name):
        find(By.CSS_SELECTOR, f'#tabs button[data-panel="{name}"]').click()

    def rows(table_id, n_min=1):
        """Wait for the table's rows (or the panel's error), return the cells' text."""
        prefix = table_id.rsplit("-", 1)[0]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")) >= n_min
                   or find(By.ID, f"{prefix}-error").text)
        err = find(By.ID, f"{prefix}-error").text
        if err:
            raise AssertionError(f"the page shows an error in {prefix}: {err}")
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in drv.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]

    drv.get(url)
    wait.until(lambda d: not find(By.ID, "model-info").text.startswith("loading"))
    shown["info"] = find(By.ID, "model-info").text

    fill("rec-input", "\n".join(sentences))
    find(By.ID, "rec-run").click()
    shown["reconstruct"] = rows("rec-out", len(sentences))
    shown["reconstruct_note"] = find(By.ID, "rec-note").text
    shot("reconstruct")

    tab("interpolate")
    fill("int-a", a)
    fill("int-b", b)
    fill("int-steps", "6")
    find(By.CSS_SELECTOR, '#int-codes option[value="mean"]').click()
    find(By.ID, "int-run").click()
    shown["interpolate"] = rows("int-out", 6)
    shown["interpolate_bars"] = [int(float(el.value_of_css_property("width").rstrip("px")))
                                 for el in drv.find_elements(By.CSS_SELECTOR, "#int-out .bar")]
    shot("interpolate")

    tab("sample")
    find(By.ID, "smp-run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#smp-out li") or find(By.ID, "smp-error").text)
    shown["sample"] = [li.text for li in drv.find_elements(By.CSS_SELECTOR, "#smp-out li")]
    shown["sample_note"] = find(By.ID, "smp-note").text
    shot("sample")

    tab("qa")
    fill("qa-question", question)
    find(By.ID, "qa-answer-run").click()
    shown["qa_answer"] = rows("qa-answer-out")
    fill("qa-candidates", "\n".join(candidates))
    find(By.ID, "qa-rank-run").click()
    shown["qa_rank"] = rows("qa-rank-out", len(candidates))
    shot("qa")

    tab("map")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map-svg .pt") or find(By.ID, "map-error").text)
    points = drv.find_elements(By.CSS_SELECTOR, "#map-svg .pt")
    shown["map_points"] = len(points)
    shown["map_what"] = find(By.ID, "map-what").text
    if points:
        top = points[-1]  # drawn last, so on top: with thousands of points the first is often covered
        ActionChains(drv).move_to_element(top).perform()
        wait.until(lambda d: find(By.ID, "map-tip").is_displayed())
        shown["map_hover"] = find(By.ID, "map-tip").text
        top.click()
        wait.until(lambda d: find(By.ID, "map-rec").text or find(By.ID, "map-error").text)
        shown["map_click"] = find(By.ID, "map-rec").text
        fill("nb-text", query or sentences[0])
        find(By.CSS_SELECTOR, f'#nb-metric option[value="{metric}"]').click()
        find(By.ID, "nb-run").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#nb-out li") or find(By.ID, "nb-error").text)
        shown["neighbors"] = [li.text for li in drv.find_elements(By.CSS_SELECTOR, "#nb-out li")]
        shown["neighbors_metric"] = metric
        shown["map_highlighted"] = len(drv.find_elements(By.CSS_SELECTOR, "#map-svg .pt.near"))
        shown["map_query_marks"] = len(drv.find_elements(By.CSS_SELECTOR, "#map-svg .query"))
    shown["map_error"] = find(By.ID, "map-error").text
    shot("map")
    return shown


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Screenshots of every panel of smim serve, with any model.")
    p.add_argument("model")
    p.add_argument("--index", help="sentences for the latent map (one a line)")
    p.add_argument("--out", required=True, help="folder for reconstruct.png, interpolate.png, sample.png, qa.png, "
                                                "map.png and shown.json")
    p.add_argument("--sentence", action="append", help="to reconstruct (repeat)")
    p.add_argument("--a", default="there was no panic")
    p.add_argument("--b", default="the company did n't break out its fourth-quarter results")
    p.add_argument("--question", default="how are glacier caves formed ?")
    p.add_argument("--candidate", action="append", help="answers to rank (repeat)")
    p.add_argument("--metric", choices=("l2", "cosine"), default="l2", help="nearest neighbours' distance")
    p.add_argument("--serve-arg", action="append", default=[], help="passed on to smim serve, e.g. --serve-arg=--lowercase")
    args = p.parse_args(argv)
    browser, driver, reason = find_chromium()
    if browser is None:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 2
    port = free_port()
    server = start_server(args.model, args.index, port, args.serve_arg)
    try:
        with tempfile.TemporaryDirectory() as profile:
            drv = open_browser(browser, driver, profile)
            try:
                shown = tour(drv, f"http://127.0.0.1:{port}/", args.out,
                             sentences=args.sentence or ["there was no panic",
                                                         "the company did n't break out its fourth-quarter results"],
                             a=args.a, b=args.b, question=args.question,
                             candidates=args.candidate or ["by water melting under the glacier", "in the summer"],
                             metric=args.metric)
            finally:
                drv.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
    (Path(args.out) / "shown.json").write_text(json.dumps(shown, indent=1))
    print(f"wrote the screenshots and shown.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
