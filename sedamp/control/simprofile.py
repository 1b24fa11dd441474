"""What a simulated run is given (`sedamp simulate`): per stage the CPU cost of an event,
phase by phase, and the set-up time of a worker; the events, the arrival process and
the machine's noise. Parsing of the flags and of a profile file. Pure.

Forms (docs/controller.md, "Simulating a topology"):

    cost     COST[,COST@AT]...   4ms          one cost for the whole run
                                 4ms,0.5ms@50%   from half of the run's events on: 0.5 ms
                                 1ms,3ms@1500    from the stage's 1,500th event on
                                 1ms,3ms@10s     from 10 s of simulated time on
    time     a number and a unit: 250us, 4ms, 0.5s, 2s
    rate     unlimited (behind backpressure) | 100/s | 40/s:3s,380/s:4s,40/s:8s (steps)

A profile file (YAML or JSON) holds the same, keyed as the flags:

    events: 3000
    rate: unlimited
    start: 50ms
    launch: 0.4s
    noise: 0.1
    seed: 1
    runtime_cores: 0.3
    other_cores: 0.5
    stages:
      a: {cost: 1ms}
      b: {cost: "4ms,0.5ms@50%", setup: 2s}
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedamp.errors import SimulationError
from sedamp.spec import Topology

# A new worker's process start before its setup() runs (fork, imports): what a spawn
# costs the pool controller in time before the worker can take events.
DEFAULT_START_S = 0.05

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(us|ms|s)\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*s\s*$")


@dataclass(frozen=True)
class Phase:
    """The CPU seconds an event costs from a point of the run on: from the stage's
    `at_events`-th event, from `at_share` of the run's events, or from `at_s` seconds of
    simulated time (none of them: from the start)."""

    cost_s: float
    at_events: float | None = None
    at_share: float | None = None
    at_s: float | None = None

    def reached(self, done: float, events: int, t: float) -> bool:
        if self.at_s is not None:
            return t >= self.at_s
        if self.at_share is not None:
            return done >= self.at_share * events
        return self.at_events is None or done >= self.at_events


@dataclass(frozen=True)
class StageCost:
    """One stage's events' cost, phase by phase, and a new worker's setup() time."""

    phases: tuple[Phase, ...] = (Phase(0.0),)
    setup_s: float = 0.0

    def cost_s(self, done: float, events: int, t: float) -> float:
        """The cost of the next event after `done` of them, at time `t`."""
        cost = self.phases[0].cost_s
        for p in self.phases[1:]:
            if p.reached(done, events, t):
                cost = p.cost_s
        return cost


@dataclass(frozen=True)
class RateStep:
    per_s: float
    seconds: float  # math.inf: for the rest of the run


@dataclass(frozen=True)
class LoadStep:
    cores: float  # CPU other programs use, in cores
    seconds: float


@dataclass(frozen=True)
class Profile:
    """Everything a simulated run takes besides the topology and the cores.

    `events`: per source (None: the source's `count` param, else what the rate steps
    hold); `rate`: None for a source as fast as backpressure lets it, else steps;
    `start_s`: a new worker's process start; `noise`: the standard deviation of the
    factor each stage's costs are multiplied by, drawn anew every period (seeded by
    `seed`); `runtime_cores`: the CPU the runtime's queues, sources and controller use,
    and `other_cores`: the CPU other programs use, both taken from the machine and from
    the budget as a real run measures them; `batch_events`: the batch the workers ask
    for (None: as the runtime adapts it, about 50 ms of work); `launch_s`: how long the
    run takes to start its first workers (a real run's processes, imports and
    registrations: its first period is mostly that)."""

    stages: Mapping[str, StageCost] = field(default_factory=dict)
    events: int | None = None
    rate: tuple[RateStep, ...] | None = None
    start_s: float = DEFAULT_START_S
    noise: float = 0.0
    seed: int = 0
    runtime_cores: float = 0.0
    batch_events: float | None = None
    other_cores: float | tuple[LoadStep, ...] = 0.0
    launch_s: float = 0.0

    def of(self, stage: str) -> StageCost:
        return self.stages.get(stage, StageCost())

    def others_at(self, t: float) -> float:
        """The CPU other programs use at `t` (steps: the last one holds after it)."""
        if not isinstance(self.other_cores, tuple):
            return self.other_cores
        start = 0.0
        for step in self.other_cores:
            start += step.seconds
            if t < start:
                return step.cores
        return self.other_cores[-1].cores if self.other_cores else 0.0


def parse_time(text: str, where: str) -> float:
    """'4ms' -> 0.004; SimulationError naming `where` otherwise."""
    m = _TIME.match(str(text))
    if m is None:
        raise SimulationError(f"{where}: {text!r} is not a time (write it with a unit: 250us, 4ms, 2s)")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_cost(text: str | Sequence[str], where: str) -> tuple[Phase, ...]:
    """'4ms,0.5ms@50%' (or the list of its parts) -> the phases."""
    parts = [str(x) for x in text] if isinstance(text, list | tuple) else str(text).split(",")
    phases = []
    for i, part in enumerate(parts):
        cost, at_sep, at = part.partition("@")
        if i == 0 and at_sep:
            raise SimulationError(f"{where}: the first cost holds from the start: drop '@{at}' from {part.strip()!r}")
        if i > 0 and not at_sep:
            raise SimulationError(
                f"{where}: say from when {part.strip()!r} holds: COST@N% (of the events), @N (events) or @Ns (time)"
            )
        phases.append(_phase(parse_time(cost, where), at.strip() if at_sep else None, where))
    if not phases:
        raise SimulationError(f"{where}: no cost given (e.g. 4ms, or 4ms,0.5ms@50%)")
    return tuple(phases)


def _phase(cost_s: float, at: str | None, where: str) -> Phase:
    if at is None:
        return Phase(cost_s)
    try:
        if at.endswith("%"):
            share = float(at[:-1]) / 100
            if not 0 <= share <= 1:
                raise ValueError(at)
            return Phase(cost_s, at_share=share)
        if at[-1:].isalpha():
            return Phase(cost_s, at_s=parse_time(at, where))
        events = float(at)
        if events < 0 or math.isnan(events):
            raise ValueError(at)
        return Phase(cost_s, at_events=events)
    except (ValueError, IndexError):
        raise SimulationError(f"{where}: '@{at}' is not N% (0-100), an event count or a time such as 10s") from None


def parse_rate(text: str | Sequence[Sequence[float]], where: str) -> tuple[RateStep, ...] | None:
    """'unlimited' -> None; '100/s' -> one step for ever; '40/s:3s,380/s:4s' -> steps;
    a list of [events_per_s, seconds] pairs (a profile file) -> steps."""
    if isinstance(text, list | tuple):
        try:
            return tuple(RateStep(float(r), float(s)) for r, s in text)
        except (TypeError, ValueError):
            raise SimulationError(f"{where}: steps are [events_per_s, seconds] pairs, got {text!r}") from None
    if str(text).strip() == "unlimited":
        return None
    steps = []
    for part in str(text).split(","):
        rate, sep, seconds = part.partition(":")
        m = _RATE.match(rate)
        if m is None:
            raise SimulationError(
                f"{where}: {part.strip()!r} is not a rate: write unlimited, 100/s, or steps 40/s:3s,380/s:4s"
            )
        steps.append(RateStep(float(m.group(1)), parse_time(seconds, where) if sep else math.inf))
    return tuple(steps)


def parse_load(text: str | float | Sequence[Sequence[float]], where: str) -> float | tuple[LoadStep, ...]:
    """'0.5' -> 0.5 cores all along; '1.5:2s,0.3:1s' -> steps (the last holds after
    it); a list of [cores, seconds] pairs (a profile file) -> steps."""
    try:
        if isinstance(text, int | float) and not isinstance(text, bool):
            value = float(text)
            if value < 0:
                raise ValueError(text)
            return value
        if isinstance(text, list | tuple):
            return tuple(LoadStep(float(c), float(s)) for c, s in text)
        if ":" not in str(text):
            return parse_load(float(str(text)), where)
        steps = []
        for part in str(text).split(","):
            cores, _, seconds = part.partition(":")
            steps.append(LoadStep(float(cores), parse_time(seconds, where)))
        if any(s.cores < 0 for s in steps):
            raise ValueError(text)
        return tuple(steps)
    except (TypeError, ValueError):
        raise SimulationError(f"{where}: {text!r} is not a load: write 0.5 (cores) or steps 1.5:2s,0.3:1s") from None


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, str]:
    """['b=4ms,0.5ms@50%', ...] -> {'b': '4ms,0.5ms@50%'}; a stage named twice: an error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise SimulationError(f"{flag} {item}: expected STAGE=VALUE, e.g. {flag} b=4ms,0.5ms@50%")
        if name.strip() in out:
            raise SimulationError(f"{flag}: stage {name.strip()!r} is given twice")
        out[name.strip()] = value.strip()
    return out


def load_profile(path: Path) -> Profile:
    """A profile file (YAML or JSON; JSON is YAML) -> a Profile."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimulationError(f"cannot read the profile {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SimulationError(f"{path}: not YAML or JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SimulationError(f"{path}: expected a mapping with 'stages' (see docs/controller.md)")
    return _profile_of(data, str(path))


_FILE_KEYS = (
    "stages", "events", "rate", "start", "launch", "noise", "seed", "runtime_cores", "other_cores", "batch_events",
)  # fmt: skip


def _profile_of(data: Mapping[str, Any], where: str) -> Profile:
    unknown = sorted(set(data) - set(_FILE_KEYS))
    if unknown:
        raise SimulationError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_FILE_KEYS)})")
    stages = data.get("stages") or {}
    if not isinstance(stages, dict):
        raise SimulationError(f"{where}: stages: expected a mapping of stage names to {{cost, setup}}")
    costs: dict[str, StageCost] = {}
    for name, entry in stages.items():
        if not isinstance(entry, dict) or set(entry) - {"cost", "setup"}:
            raise SimulationError(f"{where}: stages.{name}: expected {{cost: 4ms, setup: 2s}} (both optional)")
        phases = parse_cost(entry["cost"], f"{where}: stages.{name}.cost") if "cost" in entry else (Phase(0.0),)
        setup = parse_time(entry["setup"], f"{where}: stages.{name}.setup") if "setup" in entry else 0.0
        costs[str(name)] = StageCost(phases, setup)
    return Profile(
        stages=costs,
        events=_number(data, "events", where, int, 1) if "events" in data else None,
        rate=parse_rate(data["rate"], f"{where}: rate") if "rate" in data else None,
        start_s=parse_time(data["start"], f"{where}: start") if "start" in data else DEFAULT_START_S,
        launch_s=parse_time(data["launch"], f"{where}: launch") if "launch" in data else 0.0,
        noise=_number(data, "noise", where, float, 0) if "noise" in data else 0.0,
        seed=_number(data, "seed", where, int, 0) if "seed" in data else 0,
        runtime_cores=_number(data, "runtime_cores", where, float, 0) if "runtime_cores" in data else 0.0,
        other_cores=parse_load(data["other_cores"], f"{where}: other_cores") if "other_cores" in data else 0.0,
        batch_events=_number(data, "batch_events", where, float, 1) if "batch_events" in data else None,
    )


def _number(data: Mapping[str, Any], key: str, where: str, kind: type, least: float) -> Any:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
        raise SimulationError(f"{where}: {key}: expected a number >= {least}, got {value!r}")
    return kind(value)


def with_flags(
    base: Profile,
    costs: Mapping[str, str] | None = None,
    setups: Mapping[str, str] | None = None,
    **given: Any,
) -> Profile:
    """`base` with the flags' values over it: `costs` and `setups` per stage (as the
    flags write them), and any other Profile field that is not None."""
    stages = dict(base.stages)
    for name, text in (costs or {}).items():
        stages[name] = dataclasses.replace(stages.get(name, StageCost()), phases=parse_cost(text, f"--cost {name}"))
    for name, text in (setups or {}).items():
        stages[name] = dataclasses.replace(stages.get(name, StageCost()), setup_s=parse_time(text, f"--setup {name}"))
    return dataclasses.replace(base, stages=stages, **{k: v for k, v in given.items() if v is not None})


def check_against(profile: Profile, topology: Topology) -> None:
    """Every stage the profile names is a handler or sink of the topology."""
    for name in profile.stages:
        spec = topology.stages.get(name)
        if spec is None:
            known = ", ".join(n for n, s in topology.stages.items() if s.kind != "source")
            raise SimulationError(f"no stage {name!r} in {topology.name} to give a cost to (its stages: {known})")
        if spec.kind == "source":
            raise SimulationError(f"stage {name!r} is a source: a source's cost is not simulated (use --rate)")


def events_of(profile: Profile, topology: Topology) -> int:
    """The events each source produces: the profile's, else the steps of its rate, else
    a source's `count` param."""
    if profile.events is not None:
        return profile.events
    if profile.rate is not None and all(math.isfinite(s.seconds) for s in profile.rate):
        return max(1, round(sum(s.per_s * s.seconds for s in profile.rate)))
    for src in topology.sources():
        try:
            return max(1, int(str(src.params.get("count"))))
        except ValueError:
            continue
    raise SimulationError(
        f"how many events does the source of {topology.name} produce? give --events N "
        "(or events: in the profile, or finite --rate steps)"
    )
