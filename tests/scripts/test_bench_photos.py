"""scripts/bench_photos.py: its topologies fuse (or keep apart) what they say, and one
smoke run on four tiny photos, every system once."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sedamp.spec import load_topology
from sedamp.spec.fusion import plan
from tests.conftest import REPO

pytest.importorskip("numpy")


def _load() -> Any:
    if str(REPO / "scripts") not in sys.path:  # as when it runs: its directory first on the path
        sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_photos", REPO / "scripts" / "bench_photos.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bp = _load()


@pytest.mark.parametrize("apart", [False, True])
def test_the_topologies_keep_the_arrays_apart_only_when_asked(tmp_path: Path, apart: bool) -> None:
    (tmp_path / "data").mkdir()
    top = load_topology(bp.topology(tmp_path, tmp_path / "data", 2.0, 85, apart), env={"OUT": "o.json"})
    assert [s.ref for s in top.stages.values()] == [
        "stages.files:ListFiles", "stages.images:Decode", "stages.images:Blur", "stages.images:Encode",
        "_photo_stages:Digest",
    ]  # fmt: skip
    assert all(s.given.isdisjoint({"workers", "group"}) for s in top.stages.values())  # the runtime chooses
    fused = {(f.upstream, f.downstream) for f in plan(top)[1] if f.action == "fuse"}
    assert fused == (set() if apart else {("decode", "blur"), ("blur", "encode")})


def test_a_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "photos.json"
    cmd = [sys.executable, "scripts/bench_photos.py", "--photos", "4", "--min-mp", "0.05", "--max-mp", "0.1"]
    cmd += ["--rounds", "1", "--data", str(tmp_path / "data"), "--json", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("$ python scripts/bench_photos.py --photos 4")
    assert "photos: 4 in " in r.stdout and "target: sedamp-apart >= 1.00x pool: " in r.stdout
    saved = json.loads(out.read_text())
    assert saved["photos"] == 4 and set(saved["walls"]) == {"sedamp", "sedamp-apart", "sedamp-frames", "pool"}
    assert all(len(w) == 1 and w[0] > 0 for w in saved["walls"].values())
    assert set(saved["ratio"]) == {"sedamp", "sedamp-apart", "sedamp-frames"} and saved["ratio"]["sedamp"]["sedamp"] == 1.0
    assert len(list((tmp_path / "data").glob("*.jpg"))) == 4  # made once, kept for the next run
