"""Run the README's latent-space examples and compare what they print with what the README says.

The section "## The latent space as a tool" holds a Python block followed by its output
block, and shell blocks of `$ smim ...` commands each followed by its output. `check`
runs them all from a scratch folder laid out like a checkout (models/ and ../shared/
linked in) and returns the differences; numbers compare to a relative 1e-3 (the last
digit of a printed distance may differ between CPUs), everything else exactly.
`python tests/readme_examples.py --write` reruns them and rewrites the outputs in place
(after a new model directory is committed); tests/test_readme_examples.py checks them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## The latent space as a tool"


@dataclass
class Example:
    kind: str        # "python" or "shell"
    code: str        # the Python source, or one command (continuation lines joined)
    expected: str    # the printed output in the README
    span: tuple      # (start, end) of the expected output in the README text


def section(text: str) -> tuple[int, int]:
    start = text.index(SECTION)
    nxt = text.find("\n## ", start + len(SECTION))
    return start, len(text) if nxt < 0 else nxt


def parse(text: str) -> list[Example]:
    s0, s1 = section(text)
    out = []
    blocks = [(m.group(1), m.group(2), m.start(2) + s0, m.end(2) + s0)
              for m in re.finditer(r"```(\w*)\n(.*?)```", text[s0:s1], re.S)]
    i = 0
    while i < len(blocks):
        lang, body, b0, b1 = blocks[i]
        if lang == "python" and i + 1 < len(blocks) and blocks[i + 1][0] == "":
            _, exp, e0, e1 = blocks[i + 1]
            out.append(Example("python", body, exp, (e0, e1)))
            i += 2
            continue
        if lang == "" and body.startswith("$ "):
            out += _shell_examples(body, b0)
        i += 1
    return out


def _shell_examples(body: str, offset: int) -> list[Example]:
    """`$ cmd \\` continuation lines, then output lines up to the next `$ `."""
    lines = body.splitlines(keepends=True)
    out, pos, i = [], offset, 0
    while i < len(lines):
        assert lines[i].startswith("$ "), lines[i]
        cmd = lines[i][2:].rstrip("\n")
        pos += len(lines[i])
        i += 1
        while cmd.endswith("\\"):
            cmd = cmd[:-1] + " " + lines[i].strip()
            pos += len(lines[i])
            i += 1
        e0 = pos
        exp = []
        while i < len(lines) and not lines[i].startswith("$ "):
            exp.append(lines[i])
            pos += len(lines[i])
            i += 1
        out.append(Example("shell", cmd, "".join(exp), (e0, pos)))
    return out


def needs(ex: Example) -> set[str]:
    """What an example reads: 'models/NAME' and 'runs/NAME' folders and '../shared'."""
    found = set(re.findall(r"(?<![\w/.])(?:models|runs)/[\w.-]+", ex.code))
    if "../shared" in ex.code:
        found.add("../shared")
    return found


def missing(examples: list[Example], root: Path = ROOT) -> list[str]:
    return sorted({n for ex in examples for n in needs(ex)
                   if not (root / n).exists()})


def _scratch(root: Path) -> Path:
    """A scratch folder work/ with models/, runs/ and ../shared linked to the checkout's."""
    tmp = Path(tempfile.mkdtemp(prefix="readme-examples-"))
    work = tmp / "work"
    work.mkdir()
    for name in ("models", "runs"):
        if (root / name).exists():
            (work / name).symlink_to((root / name).resolve())
    if (root / "../shared").exists():
        (tmp / "shared").symlink_to((root / "../shared").resolve())
    return work


def run(ex: Example, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if ex.kind == "python":
        argv = [sys.executable, "-c", ex.code]
    else:
        argv = ["bash", "-c", ex.code]
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode:
        raise RuntimeError(f"README example failed (status {p.returncode}): {ex.code[:200]}\n{p.stderr[-2000:]}")
    return p.stdout


_NUM = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?")


def same(expected: str, got: str, rel: float = 1e-3) -> bool:
    """Equal apart from trailing blanks, numbers with a decimal point to a relative `rel`."""
    a, b = expected.rstrip("\n").splitlines(), got.rstrip("\n").splitlines()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x, y = x.rstrip(), y.rstrip()
        if _NUM.sub("#", x) != _NUM.sub("#", y):
            return False
        for u, v in zip(_NUM.findall(x), _NUM.findall(y)):
            fu, fv = float(u), float(v)
            if abs(fu - fv) > rel * max(abs(fu), abs(fv), 1e-12):
                return False
    return True


def check(text: str, root: Path = ROOT) -> list[str]:
    """Differences between the README's outputs and what the examples print now."""
    work = _scratch(root)
    problems = []
    try:
        for ex in parse(text):
            got = run(ex, work)
            if not same(ex.expected, got):
                problems.append(f"--- {ex.code.splitlines()[0][:100]}\nREADME:\n{ex.expected}\nnow:\n{got}")
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)
    return problems


def write(text: str, root: Path = ROOT) -> str:
    """The README text with every example's output replaced by what it prints now."""
    work = _scratch(root)
    try:
        parts, last = [], 0
        for ex in parse(text):
            got = run(ex, work)
            e0, e1 = ex.span
            parts += [text[last:e0], got if got.endswith("\n") or not got else got + "\n"]
            if ex.kind == "shell" and text[e1 - 1:e1] == "\n" and got and text[e0:e1].endswith("\n\n"):
                parts.append("\n")  # keep the blank line between commands
            last = e1
        parts.append(text[last:])
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)
    return "".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the outputs in README.md")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    args = ap.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    gone = missing(parse(text), path.parent)
    if gone:
        print(f"cannot run the examples: missing {', '.join(gone)}", file=sys.stderr)
        return 2
    if args.write:
        path.write_text(write(text, path.parent))
        print(f"rewrote the example outputs in {path}")
        return 0
    problems = check(text, path.parent)
    print("\n".join(problems) if problems else f"{len(parse(text))} examples print what {path.name} says")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
