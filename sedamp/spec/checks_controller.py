"""The checks of a topology's controller: section: the core budget, the period, the pool
policy, the drain deadline, the transport and executor, and the network keys that only
tcp takes. Pure: reads the raw mapping, records into the shared `Problems` and returns the
`ControllerSpec` (the defaults for what is missing or wrong)."""

from __future__ import annotations

from typing import Any

from sedamp.runtime import security
from sedamp.spec.keys import CONTROLLER_KEYS, TCP_KEYS
from sedamp.spec.model import EXECUTOR_CHOICES, POLICY_CHOICES, ControllerSpec
from sedamp.spec.problems import Problems, describe

__all__ = ["check_controller"]


def check_controller(p: Problems, raw: Any) -> ControllerSpec:
    path: tuple[Any, ...] = ("controller",)
    if raw is None:
        return ControllerSpec()
    if not isinstance(raw, dict):
        p.add(path, f"must be a mapping, got {describe(raw)}", "e.g. controller: {cores: auto, policy: adaptive}")
        return ControllerSpec()
    p.unknown_keys(path, raw, CONTROLLER_KEYS, "controller")
    default = ControllerSpec()
    cores: int | None = default.cores
    if raw.get("cores") is not None and raw["cores"] != "auto":
        cores = p.integer((*path, "cores"), raw["cores"], hint="use cores: auto or a number of cores >= 1")
    period = default.period_s
    if raw.get("period_s") is not None:
        period = p.positive_float((*path, "period_s"), raw["period_s"], "e.g. period_s: 0.5") or period
    policy: Any = default.policy
    if raw.get("policy") is not None:
        policy = p.choice((*path, "policy"), raw["policy"], POLICY_CHOICES) or policy
    drain = default.drain_timeout_s
    if raw.get("drain_timeout_s") is not None:
        drain = (
            p.positive_float((*path, "drain_timeout_s"), raw["drain_timeout_s"], "e.g. drain_timeout_s: 10") or drain
        )
    transport: Any = "ipc"
    if raw.get("transport") is not None:
        transport = p.choice((*path, "transport"), raw["transport"], ("ipc", "tcp")) or "ipc"
    executor: Any = "local"
    if raw.get("executor") is not None:
        executor = p.choice((*path, "executor"), raw["executor"], EXECUTOR_CHOICES) or "local"
    net = _network(p, path, raw, transport, executor)
    return ControllerSpec(
        cores=cores, period_s=period, policy=policy, drain_timeout_s=drain, transport=transport, **net
    )


def _network(p: Problems, path: tuple[Any, ...], raw: dict[Any, Any], transport: str, executor: str) -> dict[str, Any]:
    """The executor's fields and the keys that apply to tcp only (which executor: ray implies):
    address, host, advertise, curve, keys; CURVE may be off on loopback addresses only."""
    net: dict[str, Any] = {"executor": executor}
    if raw.get("address") is not None:
        if executor != "ray":
            p.add((*path, "address"), "address applies to executor: ray", "add executor: ray, or remove it")
        else:
            value = p.string((*path, "address"), raw["address"], "e.g. address: 10.0.0.5:6379")
            if value:
                net["address"] = value
    tcp = transport == "tcp" or executor == "ray"  # Ray's workers reach the queues over tcp
    for key in TCP_KEYS:
        if raw.get(key) is None:
            continue
        if not tcp:
            p.add((*path, key), f"{key} applies to transport: tcp", "add transport: tcp, or remove it")
            continue
        if key == "curve":
            if not isinstance(raw[key], bool):
                p.add((*path, key), f"must be true or false, got {describe(raw[key])}", "e.g. curve: true")
                continue
            net[key] = raw[key]
        else:
            value = p.string((*path, key), raw[key], "a string")
            if value:
                net[key] = value
    if tcp and net.get("curve") is False:
        for key in ("host", "advertise"):
            host = net.get(key, "127.0.0.1")
            if not security.is_loopback(host):
                p.add(
                    (*path, "curve"),
                    f"a non-loopback {key} ({host}) requires CURVE authentication",
                    "remove curve: false (keys are made for each run, or given with keys:)",
                )
                break
    return net
