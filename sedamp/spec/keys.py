"""The keys a topology file may hold, section by section. Pure data: the checks refuse
any other key with these lists, and the JSON Schema is tested against them so that the
two cannot drift apart."""

from __future__ import annotations

__all__ = [
    "CONTROLLER_KEYS",
    "EDGE_KEYS",
    "ON_ERROR_KEYS",
    "POOL_KEYS",
    "QUEUE_KEYS",
    "STAGE_KEYS",
    "TCP_KEYS",
    "TOP_KEYS",
    "WORKERS_KEYS",
]

TOP_KEYS = ("name", "description", "stages", "controller")
STAGE_KEYS = (
    "source", "handler", "sink", "params", "workers", "queue", "batch", "to", "group", "description",
    "on_error", "timeout_s", "max_events", "max_rss_mb", "dedupe", "max_event_bytes", "fuse",
)  # fmt: skip
ON_ERROR_KEYS = ("retry", "backoff_s", "then", "budget")
# set on a group's first stage only: they act on the worker process the group shares
POOL_KEYS = ("workers", "queue", "batch", "timeout_s", "max_events", "max_rss_mb")
QUEUE_KEYS = ("capacity", "on_full", "max_bytes")
WORKERS_KEYS = ("min", "max")
CONTROLLER_KEYS = (
    "cores",
    "period_s",
    "policy",
    "drain_timeout_s",
    "transport",
    "host",
    "advertise",
    "curve",
    "keys",
    "executor",
    "address",
)
# apply to transport: tcp only (which executor: ray implies)
TCP_KEYS = ("host", "advertise", "curve", "keys")
EDGE_KEYS = ("stage", "key", "when")
