"""docs/stages.md is generated from the stage modules' docstrings and must be current."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_stage_reference_is_current() -> None:
    r = subprocess.run(
        [sys.executable, "scripts/stage_reference.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


def test_every_public_stage_is_in_the_reference() -> None:
    import importlib
    import pkgutil

    import stages

    text = (REPO / "docs" / "stages.md").read_text(encoding="utf-8")
    for m in pkgutil.iter_modules(stages.__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"stages.{m.name}")
        assert getattr(mod, "__all__", None), f"stages.{m.name} has no __all__"
        for name in mod.__all__:
            if callable(getattr(mod, name)):
                assert f"### `stages.{m.name}:{name}`" in text, f"stages.{m.name}:{name} is not in docs/stages.md"
