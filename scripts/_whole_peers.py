"""One system running one workload, as its own program: what `bench_whole.py` times from
interpreter start to exit.

    python scripts/_whole_peers.py SYSTEM WORKLOAD EVENTS OUT [CHUNK]

SYSTEM is serial, pool, pool-chain, pypeln or mpire (sedamp is run as `sedamp run`);
WORKLOAD is heavy or tiny (the stages of topologies/burn.yaml and tiny.yaml). The
result, ``{"count", "checksum"}`` as `stages.burn.Collect` writes it, goes to OUT.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from stages.burn import Collect, Seeds, burn, tiny

Stage = Callable[[Any], Any]

# (stages, the field the sink sums, workers per stage for the chained systems)
WORKLOADS: dict[str, tuple[list[Stage], str, list[int]]] = {
    "heavy": (
        [
            functools.partial(burn, iterations=9600, field="a"),
            functools.partial(burn, iterations=38400, field="b", seed_field="a"),
            functools.partial(burn, iterations=4800, field="c", seed_field="b"),
        ],
        "c",
        [1, 2, 1],  # the best fixed split on 2 cores (1 / 4 / 0.5 ms)
    ),
    "tiny": ([tiny, tiny], "seed", [1, 1]),
}


def fused(stages: list[Stage], event: Any) -> Any:
    for stage in stages:
        event = stage(event)
    return event


def drain(outputs: Iterable[Any], out: str, field: str) -> None:
    sink = Collect()
    sink.setup(out, field=field)
    for ev in outputs:
        sink.handle(ev)
    sink.teardown()


def seeds(n: int) -> Iterator[Any]:
    src = Seeds()
    src.setup(n)
    return iter(src)


def main(system: str, workload: str, n: int, out: str, chunk: int) -> None:
    stages, field, workers = WORKLOADS[workload]
    cores = len(os.sched_getaffinity(0))
    one = functools.partial(fused, stages)
    if system == "serial":
        drain(map(one, seeds(n)), out, field)
    elif system == "pool":
        import multiprocessing

        with multiprocessing.Pool(cores) as pool:
            drain(pool.imap_unordered(one, seeds(n), chunksize=chunk), out, field)
    elif system == "pool-chain":
        import multiprocessing

        pools = [multiprocessing.Pool(w) for w in workers]
        try:
            flow: Iterable[Any] = seeds(n)
            for pool, stage in zip(pools, stages, strict=True):
                flow = pool.imap_unordered(stage, flow, chunksize=chunk)
            drain(flow, out, field)
        finally:
            for pool in pools:
                pool.close()
                pool.join()
    elif system == "pypeln":
        import pypeln as pl

        flow = seeds(n)
        for stage, w in zip(stages, workers, strict=True):
            flow = pl.process.map(stage, flow, workers=w)
        drain(flow, out, field)
    elif system == "mpire":
        from mpire import WorkerPool

        with WorkerPool(n_jobs=cores) as pool:
            args = ((ev,) for ev in seeds(n))  # mpire passes a dict as keyword arguments, a tuple as positional
            drain(pool.imap_unordered(one, args, chunk_size=chunk), out, field)
    else:
        raise SystemExit(f"unknown system {system!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1)
