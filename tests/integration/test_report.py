"""`sedamp run --report DIR`: a real run writes its metrics, its plots and a summary page."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from PIL import Image

from sedamp.observe.report import PLOTS
from tests.integration.util import TOPOLOGIES, run_sedamp, stage_of, summary_of


def test_run_with_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = run_sedamp(
        "run",
        str(TOPOLOGIES / "burn.yaml"),
        "--set",
        "seeds.params.count=300",
        "--set",
        "controller.period_s=0.2",
        "--report",
        str(out),
        "--workdir",
        str(tmp_path / "w"),
        "--json",
        env={"OUT": str(tmp_path / "result.json")},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"sedamp: report written to {out / 'index.html'}" in proc.stderr.splitlines()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) >= 2 and records[-1]["final"] is True
    assert set(records[-1]["stages"]) == {"seeds", "a", "b", "c", "collect"}
    for file, _ in PLOTS:
        with Image.open(out / file) as img:
            assert img.format == "PNG"
            rgb = img.convert("RGB")
            assert len(rgb.getcolors(rgb.width * rgb.height)) > 50, f"{file} is nearly flat"
    page = (out / "index.html").read_text()
    for file, _ in PLOTS:
        assert f'<img src="{file}"' in page
    summary = summary_of(proc)
    for name in ("a", "b", "c", "collect"):
        st = stage_of(summary, name)
        row = re.search(
            rf"<tr><td>{name}</td><td[^>]*>[^<]*</td><td>([\d,]+)</td><td>([\d,]+)</td><td>([\d,]+)</td>", page
        )
        assert row is not None, name
        assert [int(x.replace(",", "")) for x in row.groups()] == [st["events_in"], st["events_out"], st["failed"]]
        assert st["events_in"] == 300
    assert "sources read 300 events" in page
    assert (out / "summary.md").is_file()


def test_run_report_without_matplotlib_starts_nothing(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    proc = run_sedamp(
        "run", str(TOPOLOGIES / "burn.yaml"), "--report", str(tmp_path / "r"), "--workdir", str(tmp_path / "w"), env=env
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: --report: plotting needs matplotlib: pip install 'sedamp[plot]'\n"
    assert not (tmp_path / "w" / "runs").exists()
    assert not (tmp_path / "r").exists()
