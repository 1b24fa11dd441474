"""stages.burn: called directly, no runtime, no processes."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sedamp.runtime.stage import check_ref
from stages import burn as burn_module
from stages.burn import (
    Collect,
    Seeds,
    burn,
    calibrate,
    expected_checksum,
    iterations_per_ms,
    jump,
    spin,
    spin_from,
    tiny,
)

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def _lcg_reference(seed: int, n: int) -> int:
    x = seed % 2**31
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
    return x


# ---------------------------------------------------------------- spin / jump


def test_spin_is_the_lcg_and_deterministic() -> None:
    assert spin(0) == 0
    assert spin(1) == 12345
    assert spin(2) == (12345 * 1103515245 + 12345) % 2**31
    assert spin(1000) == spin(1000) == _lcg_reference(0, 1000)
    assert spin(500, seed=7) == spin_from(7, 500) == _lcg_reference(7, 500)
    assert spin_from(2**40 + 5, 3) == _lcg_reference(5, 3)  # the seed is taken mod 2**31
    assert spin_from(spin_from(9, 100), 250) == spin_from(9, 350)  # chaining = continuing
    assert all(0 <= spin_from(s, 17) < 2**31 for s in range(50))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 1000, 4097])
@pytest.mark.parametrize("seed", [0, 1, 123456789, 2**31 - 1, 2**45 + 3])
def test_jump_equals_spin(seed: int, n: int) -> None:
    assert jump(seed, n) == spin_from(seed, n)


def test_jump_is_fast_for_huge_n() -> None:
    t0 = time.perf_counter()
    value = jump(1, 10**15)
    assert time.perf_counter() - t0 < 0.01
    assert 0 <= value < 2**31
    with pytest.raises(ValueError, match=">= 0"):
        jump(1, -1)


# ---------------------------------------------------------------- handlers


def test_burn_adds_field_and_chains() -> None:
    ev = {"seed": 5}
    a = burn(ev, iterations=100, field="a")
    assert a == {"seed": 5, "a": spin_from(5, 100)}
    assert ev == {"seed": 5}  # a new dict
    b = burn(a, iterations="50", field="b", seed_field="a")  # type: ignore[arg-type]
    assert b == {"seed": 5, "a": spin_from(5, 100), "b": spin_from(5, 150)}


def test_burn_errors() -> None:
    with pytest.raises(ValueError, match="no 'seed' field"):
        burn({"x": 1}, iterations=1, field="a")
    with pytest.raises(ValueError, match="'a' must be an int, got str"):
        burn({"a": "1"}, iterations=1, field="b", seed_field="a")
    with pytest.raises(ValueError, match="must be an int, got bool"):
        burn({"seed": True}, iterations=1, field="b")


def test_tiny_is_identity() -> None:
    ev: Any = {"seed": 1, "x": [1, 2]}
    assert tiny(ev) is ev
    assert tiny(None) is None


# ---------------------------------------------------------------- calibrate


def test_calibrate_returns_plausible_iterations() -> None:
    rate = iterations_per_ms(sample_ms=5, repeats=2)
    assert 100 < rate < 10**8
    n = calibrate(2.0, sample_ms=5, repeats=2)
    assert isinstance(n, int) and n >= 1
    t0 = time.perf_counter()
    spin(n)
    elapsed_ms = (time.perf_counter() - t0) * 1000
    assert 0.2 < elapsed_ms < 50  # ~2 ms, generously bounded for a busy machine
    with pytest.raises(ValueError, match="target_ms"):
        calibrate(0)


def test_main_prints_counts(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setattr(burn_module, "iterations_per_ms", lambda **_: 1000.0)
    assert burn_module.main(["1", "0.5"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "1000 iterations per ms",
        "1 ms: 1000 iterations",
        "0.5 ms: 500 iterations",
    ]
    assert burn_module.main([]) == 2


# ---------------------------------------------------------------- Seeds / Collect


def test_seeds() -> None:
    src = Seeds()
    src.setup(count=4)
    assert list(src) == [{"seed": 0}, {"seed": 1}, {"seed": 2}, {"seed": 3}]
    assert src.total() == 4
    from_env = Seeds()
    from_env.setup(count="3")  # what ${COUNT:-3} may give
    assert from_env.total() == 3 and len(list(from_env)) == 3
    with pytest.raises(ValueError, match=">= 0"):
        Seeds().setup(count=-1)


def test_collect_writes_summary_atomically(tmp_path: Path) -> None:
    out = tmp_path / "res" / "result.json"
    sink = Collect()
    sink.setup(out=str(out), field="c")
    for v in (5, 7, 2**31 - 1):
        sink.handle({"seed": 0, "c": v})
    assert not out.exists()
    sink.teardown()
    sink.teardown()
    assert json.loads(out.read_text()) == {"count": 3, "checksum": 5 + 7 + 2**31 - 1}
    assert os.listdir(out.parent) == ["result.json"]


def test_collect_errors_and_empty(tmp_path: Path) -> None:
    sink = Collect()
    sink.setup(out=str(tmp_path / "r.json"))
    with pytest.raises(ValueError, match="no 'seed' field"):
        sink.handle({"c": 1})
    with pytest.raises(ValueError, match="'seed' must be an int"):
        sink.handle({"seed": 1.5})
    sink.teardown()
    assert json.loads((tmp_path / "r.json").read_text()) == {"count": 0, "checksum": 0}


# ---------------------------------------------------------------- expected_checksum


def _run_serially(count: int, iterations: list[int], out: Path) -> dict[str, int]:
    src = Seeds()
    src.setup(count=count)
    sink = Collect()
    fields = ["seed"] + [f"s{i}" for i in range(len(iterations))]
    sink.setup(out=str(out), field=fields[-1])
    for ev in src:
        for i, n in enumerate(iterations):
            ev = burn(ev, iterations=n, field=fields[i + 1], seed_field=fields[i])
        sink.handle(tiny(ev))
    sink.teardown()
    result: dict[str, int] = json.loads(out.read_text())
    return result


def test_expected_checksum_matches_a_serial_run(tmp_path: Path) -> None:
    got = _run_serially(60, [100, 300, 50], tmp_path / "r.json")
    assert got == expected_checksum(60, [100, 300, 50])
    assert got == expected_checksum(60, 450)  # a single int: one stage
    assert got != expected_checksum(59, [100, 300, 50])
    assert got != expected_checksum(60, [100, 300])


def test_expected_checksum_without_stages() -> None:
    assert expected_checksum(10) == {"count": 10, "checksum": sum(range(10))}
    assert expected_checksum(0, [5]) == {"count": 0, "checksum": 0}


# ---------------------------------------------------------------- topologies/burn.yaml


def _stage_params(topology: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each stage's params, with ${TOPOLOGY_DIR} and ${VAR:-default} substituted."""
    text = (TOPOLOGIES / topology).read_text()

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2) or ""
        return str(TOPOLOGIES) if name == "TOPOLOGY_DIR" else env.get(name, default)

    spec = yaml.safe_load(re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", sub, text))
    return {name: dict(s.get("params") or {}) for name, s in spec["stages"].items()}


def test_burn_topology_is_checkable_and_verifiable(tmp_path: Path) -> None:
    spec = yaml.safe_load((TOPOLOGIES / "burn.yaml").read_text())
    out = tmp_path / "result.json"
    params = _stage_params("burn.yaml", {"COUNT": "3", "OUT": str(out)})
    for name, stage in spec["stages"].items():
        kind = next(k for k in ("source", "handler", "sink") if k in stage)
        assert check_ref(kind, stage[kind], params[name]) is None, name
    chain = ["a", "b", "c"]
    iterations = [params[s]["iterations"] for s in chain]
    assert all(isinstance(n, int) and n > 0 for n in iterations)
    assert iterations[1] > iterations[0] > iterations[2]  # ~4 ms > ~1 ms > ~0.5 ms
    assert params["collect"]["field"] == params["c"]["field"]

    src = Seeds()
    src.setup(**params["seeds"])
    sink = Collect()
    sink.setup(**params["collect"])
    for ev in src:
        for name in chain:
            ev = burn(ev, **params[name])
        sink.handle(ev)
    sink.teardown()
    assert json.loads(out.read_text()) == expected_checksum(3, iterations)
    assert expected_checksum(2000, iterations)["count"] == 2000


def test_slow_start_burns_after_a_setup_that_takes_its_time() -> None:
    from stages.burn import SlowStart

    stage = SlowStart()
    t0 = time.monotonic()
    stage.setup(iterations=100, field="m", setup_s=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert stage.handle({"seed": 7}) == burn({"seed": 7}, 100, "m")
