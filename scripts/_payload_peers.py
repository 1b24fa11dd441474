"""One peer system moving large arrays through three stages, as its own program: what
`bench_payloads.py` times from interpreter start to exit.

    python scripts/_payload_peers.py SYSTEM COUNT NBYTES OUT

SYSTEM is pool (the three stages fused, Pool.imap: each array pickled with protocol 5
to a worker and back), pool-chain (a Pool per stage, imap feeding imap: each array
crosses the parent between stages) or ray (a task per stage, arrays through Ray's
object store).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from _payload_stages import Arrays, Check, look1, look2, look3

STAGES = (look1, look2, look3)


def fused(event: dict[str, Any]) -> dict[str, Any]:
    for stage in STAGES:
        event = stage(event)
    return event


def drain(outputs: Iterable[Any], out: str) -> None:
    sink = Check()
    sink.setup(out)
    for ev in outputs:
        sink.handle(ev)
    sink.teardown()


def source(count: int, nbytes: int) -> Iterable[Any]:
    src = Arrays()
    src.setup(count, nbytes)
    return iter(src)


def run_ray(count: int, nbytes: int, out: str) -> None:
    import ray

    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)
    tasks = [ray.remote(stage) for stage in STAGES]
    window = 2 * len(os.sched_getaffinity(0))  # events in flight, as a bounded queue would hold
    pending: list[Any] = []

    def submit(ev: Any) -> Any:
        ref = ray.put(ev)
        for t in tasks:
            ref = t.remote(ref)
        return ref

    def results() -> Iterable[Any]:
        for ev in source(count, nbytes):
            pending.append(submit(ev))
            if len(pending) >= window:
                yield ray.get(pending.pop(0))
        while pending:
            yield ray.get(pending.pop(0))

    drain(results(), out)
    ray.shutdown()


def main(system: str, count: int, nbytes: int, out: str) -> None:
    cores = len(os.sched_getaffinity(0))
    if system == "pool":
        import multiprocessing

        with multiprocessing.Pool(cores) as pool:
            drain(pool.imap(fused, source(count, nbytes), chunksize=1), out)
    elif system == "pool-chain":
        import multiprocessing

        pools = [multiprocessing.Pool(1) for _ in STAGES]
        try:
            flow: Iterable[Any] = source(count, nbytes)
            for pool, stage in zip(pools, STAGES, strict=True):
                flow = pool.imap(stage, flow, chunksize=1)
            drain(flow, out)
        finally:
            for pool in pools:
                pool.close()
                pool.join()
    elif system == "ray":
        run_ray(count, nbytes, out)
    else:
        raise SystemExit(f"unknown system {system!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
