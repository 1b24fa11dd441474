"""Where the recorder files a group's latency samples."""

from __future__ import annotations

from sedamp.control.recorder import Recorder
from tests.unit.control.fakes import roster, topology


def test_a_groups_path_latency_is_filed_under_its_sink() -> None:
    """The recorder files the time from the source to a group's sink under the sink (it
    went under the group's first stage, and the report named that stage)."""
    top = topology(
        "stages:\n  src: {source: m:src, to: thumb}\n"
        "  thumb: {handler: m:thumb, group: g, to: write}\n  write: {sink: m:write, group: g}\n"
    )
    r, _, _ = roster(top)
    r.stages["thumb"].target = 1
    r.reconcile()
    rec = Recorder(top, r)
    (w,) = r.stages["thumb"].workers.values()
    rec.gather(w, {"service": [[1.0, 3]], "path": [[40.0, 3]]})
    stages = rec.period(cores=2, decisions=[]).as_dict()["stages"]
    assert stages["write"]["latency_ms"]["path"]["p50"] == 40.0 and stages["thumb"]["latency_ms"]["path"] is None
    assert stages["thumb"]["latency_ms"]["service"]["p50"] == 1.0  # the chain's service time: at its head
