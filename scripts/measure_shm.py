"""Measure: does shared memory beat zero-copy ZeroMQ frames for large arrays on one host?

    python scripts/measure_shm.py                   # 48 MB and 12 MB arrays, 5 rounds
    python scripts/measure_shm.py --mb 48 --count 40 --rounds 5

Two processes, a producer that makes each array (as a handler would: new memory) and
a consumer that reads all of it (a sum), in two ways, interleaved:

    frames   the array goes as its own frame over an ipc:// PUSH/PULL pair, sent from
             its memory (copy=False) and read in place from the received frame: what
             sedamp.runtime.payload does. The kernel copies the bytes in and out.
    shm      the producer copies the array into a new shared-memory block
             (multiprocessing.shared_memory) and sends its name; the consumer maps it,
             reads it and unlinks it. One copy in user space, fresh pages on both sides.
    shm-pool as shm, but blocks are reused from a pool of 4 (no fresh pages after the
             first), the best case for shared memory.
    blocks   what sedamp does (sedamp.runtime.blocks): the producer writes the array into a
             recycled block (pwrite), the consumer maps it read-only, reads it, closes the
             mapping and frees the block (in a run the stage queue frees it at the ACK).
    frames-warm  as frames, with glibc told to keep freed large blocks in the heap
             (mallopt), so each new array and each received frame reuse warm pages.

Reports each way's median MB/s and the median ratio to frames in the same round.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from multiprocessing import shared_memory

import numpy as np
import zmq

from sedamp.runtime.blocks import Blocks, run_token, sweep

ENDPOINT = "ipc:///tmp/sedamp-measure-shm"
TOKEN = run_token()


def warm_heap() -> None:
    """Keep freed large blocks in the heap (glibc): mallopt(M_MMAP_THRESHOLD, 1 GiB) and
    mallopt(M_TRIM_THRESHOLD, 1 GiB), so the next array reuses warm pages."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


def consumer(way: str, count: int, nbytes: int, done: mp.Queue) -> None:  # type: ignore[type-arg]
    if way == "frames-warm":
        warm_heap()
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.bind(ENDPOINT)
    back = ctx.socket(zmq.PUSH)
    back.bind(ENDPOINT + "-back")
    total = 0.0
    pool: dict[str, shared_memory.SharedMemory] = {}
    blocks = Blocks(TOKEN)
    for _ in range(count):
        if way == "blocks":
            ref = s.recv()
            a = np.frombuffer(blocks.open(ref), dtype=np.float64)
            total += float(a.sum())
            del a
            blocks.settle(blocks.take_opened())
            blocks.free([ref])
        elif way.startswith("frames"):
            frame = s.recv(copy=False)
            a = np.frombuffer(frame.buffer, dtype=np.float64)
            total += float(a.sum())
        else:
            name = s.recv_string()
            shm = pool.get(name) or shared_memory.SharedMemory(name=name)
            a = np.ndarray((nbytes // 8,), dtype=np.float64, buffer=shm.buf)
            total += float(a.sum())
            del a
            if way == "shm":
                shm.close()
                shm.unlink()
            else:
                pool[name] = shm
                back.send_string(name)  # the block may be written again
    for shm in pool.values():
        shm.close()
    done.put(total)
    s.close(0)
    back.close(0)
    ctx.term()


def run(way: str, count: int, nbytes: int) -> float:
    done: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=consumer, args=(way, count, nbytes, done))
    p.start()
    if way == "frames-warm":
        warm_heap()
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(ENDPOINT)
    back = ctx.socket(zmq.PULL)
    back.connect(ENDPOINT + "-back")
    free: list[shared_memory.SharedMemory] = []
    owned: dict[str, shared_memory.SharedMemory] = {}
    blocks = Blocks(TOKEN)
    t0 = time.perf_counter()
    for i in range(count):
        a = np.full(nbytes // 8, float(i))  # the handler's new array
        if way == "blocks":
            s.send(blocks.share(a))
        elif way.startswith("frames"):
            s.send(a, copy=False)
        elif way == "shm":
            shm = shared_memory.SharedMemory(create=True, size=nbytes)
            np.ndarray(a.shape, dtype=a.dtype, buffer=shm.buf)[:] = a
            s.send_string(shm.name)
            shm.close()
        else:
            if not free and len(owned) >= 4:
                free.append(owned[back.recv_string()])
            if free:
                shm = free.pop()
            else:
                shm = shared_memory.SharedMemory(create=True, size=nbytes)
                owned[shm.name] = shm
            np.ndarray(a.shape, dtype=a.dtype, buffer=shm.buf)[:] = a
            s.send_string(shm.name)
            while back.poll(0):
                free.append(owned[back.recv_string()])
    total = done.get(timeout=600)
    wall = time.perf_counter() - t0
    sweep(TOKEN)
    p.join(timeout=30)
    for shm in owned.values():
        shm.close()
        shm.unlink()
    s.close(0)
    back.close(0)
    ctx.term()
    assert total == sum(range(count)) * (nbytes // 8), (way, total)
    return count * nbytes / wall / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=lambda t: [int(x) for x in t.split(",")], default=[48, 12])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ways = ["frames", "frames-warm", "shm", "shm-pool", "blocks"]
    for mb in args.mb:
        rates: dict[str, list[float]] = {w: [] for w in ways}
        for rnd in range(args.rounds):
            for way in ways[rnd % len(ways) :] + ways[: rnd % len(ways)]:
                rates[way].append(run(way, args.count, mb * 1_000_000))
        print(f"{mb} MB x {args.count}, {args.rounds} interleaved rounds:")
        for w in ways:
            ratio = statistics.median(a / b for a, b in zip(rates[w], rates["frames"], strict=True))
            print(f"  {w:9} {statistics.median(rates[w]):8,.0f} MB/s   {ratio:.2f}x frames")


if __name__ == "__main__":
    main()
