"""The README's tutorials run as written: every code block of its "Tutorial:" sections,
in order, in a fresh directory, with the environment's commands on PATH (as activating
it would put them). A block that names its file in its first line (``# shout.py``) is
written to that file; a shell block is run line by line, and every command must
succeed. A block the test cannot run (it installs packages or activates the
environment) is marked right above it with ``<!-- readme-test: skip (why) -->``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.integration.util import REPO

SKIP = "<!-- readme-test: skip"
MOST_SKIPPED = 1  # keep the tutorials runnable: a new skip must be a considered one


@dataclass(frozen=True)
class Block:
    section: str
    lang: str
    text: str
    line: int  # of the README, where the block starts
    skipped: bool


def tutorial_blocks(readme: str) -> list[Block]:
    """The fenced code blocks of every ``## Tutorial: ...`` section, in order."""
    blocks = []
    section = None
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:] if line.startswith("## Tutorial:") else None
        elif section is not None and line.startswith("```"):
            end = lines.index("```", i + 1)
            skipped = i > 0 and lines[i - 1].startswith(SKIP)
            blocks.append(Block(section, line[3:].strip(), "\n".join(lines[i + 1 : end]) + "\n", i + 1, skipped))
            i = end
        i += 1
    return blocks


def commands(block: Block) -> list[str]:
    """The commands of a shell block: one a line, comments and blank lines left out."""
    return [line for line in block.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_tutorial_blocks_are_found() -> None:
    blocks = tutorial_blocks((REPO / "README.md").read_text())
    assert {b.section for b in blocks} >= {"Tutorial: thumbnail a folder of images", "Tutorial: a pipeline of your own"}
    assert sum(b.skipped for b in blocks) <= MOST_SKIPPED
    assert all(b.lang in ("sh", "python", "yaml") for b in blocks), [(b.line, b.lang) for b in blocks]
    # every file the tutorials write is named in the block's first line
    assert not [b.line for b in blocks if b.lang != "sh" and not b.text.startswith("# ")]


def fresh_clone(tmp: Path) -> Path:
    """The top of a checkout, as the thumbnail tutorial starts from: the example
    topologies and their data (the package itself is installed in the environment)."""
    top = tmp / "clone"
    shutil.copytree(REPO / "topologies", top / "topologies", ignore=shutil.ignore_patterns("__pycache__"))
    return top


def test_the_tutorials_run_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"  # ~ of the tutorial: ~/photos holds a few images of the user's
    (home / "photos" / "2024").mkdir(parents=True)
    Image.new("RGB", (640, 480), (200, 30, 30)).save(home / "photos" / "red.jpg")
    Image.new("RGB", (300, 900), (30, 30, 200)).save(home / "photos" / "2024" / "blue.png")
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # instead of activating
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    for var in ("IN", "OUT", "INPUT"):  # the tutorials' own variables start unset
        env.pop(var, None)
    places = {"Tutorial: thumbnail a folder of images": fresh_clone(tmp_path)}
    ran = 0
    for block in tutorial_blocks((REPO / "README.md").read_text()):
        if block.skipped:
            continue
        cwd = places.setdefault(block.section, tmp_path / re.sub(r"\W+", "-", block.section).strip("-"))
        cwd.mkdir(exist_ok=True)
        if block.lang != "sh":
            name = block.text.splitlines()[0][2:].strip()
            (cwd / name).write_text(block.text)
            continue
        for command in commands(block):
            r = subprocess.run(
                ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
            )  # fmt: skip
            assert r.returncode == 0, f"README.md:{block.line}: `{command}` exited {r.returncode}:\n{r.stderr}"
            ran += 1
    assert ran >= 6
    clone, own = places.values()
    # a topology's relative paths are relative to its folder; ~/thumbs is the user's own
    assert len(list((clone / "topologies" / "out" / "thumbnails").rglob("*.jpg"))) == 6
    assert sorted(p.relative_to(home / "thumbs").as_posix() for p in (home / "thumbs").rglob("*.jpg")) == [
        "2024/blue.jpg",
        "red.jpg",
    ]
    assert (own / "shout.txt").read_text() == "HELLO_LOUD\nWORLD_LOUD\n"  # the last run's suffix
