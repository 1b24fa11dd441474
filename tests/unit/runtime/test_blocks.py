"""Shared-memory blocks (sedamp.runtime.blocks), in a temporary directory standing for
/dev/shm: written once, mapped read-only, freed for reuse, kept while a handler holds
an array over one, and swept at the end of a run or after a killed one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sedamp.runtime import blocks, payload, wire
from sedamp.runtime.blocks import BlockError, Blocks

MIB = 1024 * 1024


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def states(d: Path) -> list[str]:
    """The state letter of each block (u, f or k)."""
    return sorted(n.split("-")[2][0] for n in names(d))


@pytest.fixture
def token() -> str:
    return blocks.run_token()


def test_size_classes_hold_the_buffer_and_waste_at_most_a_third() -> None:
    for n in [1, 2, 3, 5, 100, 4 * MIB, 4 * MIB + 1, 12_000_000, 48_000_000, 3 << 20]:
        c = blocks.size_class(n)
        assert c >= n and c <= max(2, n * 3 // 2 + 1), (n, c)
    assert blocks.size_class(48_000_000) == 48 * MIB
    assert blocks.size_class(4 * MIB) == 4 * MIB


def test_a_buffer_goes_through_a_block_and_is_read_in_place(tmp_path: Path, token: str) -> None:
    producer, consumer = Blocks(token, str(tmp_path)), Blocks(token, str(tmp_path))
    data = bytes(range(256)) * (5 * MIB // 256)
    ref = producer.share(data)
    assert blocks.is_ref(ref) and len(ref) < 200 and blocks.ref_nbytes(ref) == len(data)
    assert states(tmp_path) == ["u"]
    view = consumer.open(ref)
    assert view.readonly and view.nbytes == len(data) and view[:256] == data[:256] and view[-1] == data[-1]
    del view
    consumer.hold(7)
    consumer.done(7)  # the mapping closes before the ACK
    assert consumer.free([ref]) == 1
    assert states(tmp_path) == ["f"]


def test_a_freed_block_is_reused_and_its_old_reference_no_longer_opens(tmp_path: Path, token: str) -> None:
    b = Blocks(token, str(tmp_path))
    first = b.share(b"a" * (5 * MIB))
    b.free([first])
    second = b.share(b"b" * (5 * MIB))
    assert b.reused == 1 and len(names(tmp_path)) == 1
    assert bytes(b.open(second)[:3]) == b"bbb"
    with pytest.raises(BlockError, match="gone"):
        b.open(first)  # a stale reference fails, never reads the next event's bytes


def test_a_block_a_handler_still_holds_is_kept_until_it_lets_go(tmp_path: Path, token: str) -> None:
    np = pytest.importorskip("numpy")
    producer, consumer = Blocks(token, str(tmp_path)), Blocks(token, str(tmp_path))
    ref = producer.share(np.full(MIB, 7.0))
    kept = np.frombuffer(consumer.open(ref), dtype=np.float64)  # a sink keeps it for finish()
    consumer.hold(1)
    consumer.done(1)
    assert states(tmp_path) == ["k", "u"]  # a second name: the block is kept
    again = Blocks(token, str(tmp_path)).open(ref)  # were the lease to come back, it still opens
    assert again[:8] == np.full(1, 7.0).tobytes()
    del again
    assert consumer.free([ref]) == 1 and states(tmp_path) == ["k"]  # the queue's free only unnames it
    other = producer.share(np.full(MIB, 9.0))  # so a producer makes a new block
    assert states(tmp_path) == ["k", "u"] and kept[0] == 7.0 and kept[-1] == 7.0
    del kept
    consumer.hold(2)  # the next batch looks again
    assert states(tmp_path) == ["f", "u"]
    assert producer.free([other]) == 1


def test_a_consumer_removes_its_kept_blocks_when_it_exits(tmp_path: Path, token: str) -> None:
    b = Blocks(token, str(tmp_path))
    ref = b.share(b"x" * (5 * MIB))
    held = b.open(ref)
    b.hold(1)
    b.done(1)
    assert states(tmp_path) == ["k", "u"]
    b.close()
    assert states(tmp_path) == ["u"] and held[0] == ord("x")  # the event's own name is the queue's to free
    assert b.free([ref]) == 1 and states(tmp_path) == ["f"]


def test_free_blocks_beyond_the_cap_are_removed(tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "FREE_BYTES", 10 * MIB)
    b = Blocks(token, str(tmp_path))
    refs = [b.share(b"z" * (5 * MIB)) for _ in range(4)]  # blocks of 6 MiB
    assert b.free(refs) == 4
    assert states(tmp_path) == ["f"]  # one fits under the cap; three were removed


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "sedamp-1.1.0-u400000-1-1", "psm_1234", "{prefix}u400000-1-1/../../x", "{prefix}x-1"],
)
def test_a_reference_to_anything_but_a_block_of_the_run_is_refused(tmp_path: Path, token: str, name: str) -> None:
    b = Blocks(token, str(tmp_path))
    (tmp_path / "psm_1234").write_bytes(b"secret" * 100)
    ref = blocks._ref(name.format(prefix=b.prefix), 600)
    with pytest.raises(BlockError, match="not a block of this run"):
        b.open(ref)
    assert b.free([ref]) == 0 and (tmp_path / "psm_1234").exists()


def test_a_reference_larger_than_its_block_is_refused(tmp_path: Path, token: str) -> None:
    b = Blocks(token, str(tmp_path))
    ref = b.share(b"q" * (5 * MIB))
    forged = blocks._ref(blocks._ref_name(ref), 64 * MIB)
    with pytest.raises(BlockError, match="smaller"):
        b.open(forged)


def test_sweep_removes_a_runs_blocks_and_only_its_own(tmp_path: Path, token: str) -> None:
    mine, other = Blocks(token, str(tmp_path)), Blocks("1.1.0", str(tmp_path))
    first, _second = mine.share(b"a" * (5 * MIB)), mine.share(b"b" * (5 * MIB))
    mine.free([first])  # one free, one in use
    other.share(b"c" * (5 * MIB))
    (tmp_path / "unrelated").write_text("x")
    assert blocks.sweep(token, str(tmp_path)) == 2
    assert names(tmp_path) == sorted(["unrelated", *[n for n in names(tmp_path) if n.startswith("sedamp-1.1.0-")]])


def test_sweep_stale_removes_the_blocks_of_runs_whose_controller_is_gone(tmp_path: Path, token: str) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{int(done.stdout)}.{1:x}.0"  # a pid that ended (or was reused: another start time)
    reused = f"{os.getpid()}.{5:x}.0"  # this pid, another start: not this run
    for t in (token, dead, reused):
        Blocks(t, str(tmp_path)).share(b"s" * (5 * MIB))
    assert blocks.sweep_stale(str(tmp_path)) == 2
    assert [n.split("-")[1] for n in names(tmp_path)] == [token]


def test_payload_reads_a_reference_among_an_events_buffers(tmp_path: Path, token: str) -> None:
    np = pytest.importorskip("numpy")
    b = Blocks(token, str(tmp_path))
    a = np.arange(MIB, dtype=np.float64)
    packed = wire.pack_event({"a": a})
    assert isinstance(packed, payload.Packed)
    refs = [b.share(x) for x in packed.bufs]
    assert payload.bufs_nbytes(refs) < 100  # a process that reads no blocks counts a reference as it is
    payload._blocks = b
    try:
        assert payload.bufs_nbytes(refs) == a.nbytes  # the byte bounds count what a block stands for
        got = wire.unpack_events([bytes(packed)], 1, [1], refs)[0]["a"]
        assert not got.flags.writeable and np.array_equal(got, a)
    finally:
        payload._blocks = None
    with pytest.raises(wire.WireError, match="reads none"):
        wire.unpack_events([bytes(packed)], 1, [1], refs)


def test_share_leaves_small_buffers_as_frames(tmp_path: Path, token: str) -> None:
    payload._blocks = Blocks(token, str(tmp_path))
    try:
        small, big = b"s" * (blocks.SHARE_BYTES - 1), b"b" * blocks.SHARE_BYTES
        out = payload.share([small, big])
        assert out[0] is small and blocks.is_ref(out[1])
    finally:
        payload._blocks = None
    assert payload.share([big])[0] is big  # a run without blocks sends frames


def test_the_blocks_a_dead_worker_kept_are_removed_and_no_others(tmp_path: Path, token: str) -> None:
    b = Blocks(token, str(tmp_path))
    ref = b.share(b"k" * (5 * MIB))
    held = b.open(ref)
    b.hold(1)
    b.done(1)  # kept, named after this process
    other = b.share(b"o" * (5 * MIB))
    assert blocks.drop_kept(token, os.getpid() + 1, str(tmp_path)) == 0
    assert blocks.drop_kept(token, os.getpid(), str(tmp_path)) == 1
    assert states(tmp_path) == ["u", "u"] and b.free([other, ref]) == 2 and held[0] == ord("k")


def test_names_stay_apart_across_instances_and_runs_in_one_process(tmp_path: Path, token: str) -> None:
    """Counters restart in every process: a reused pid, or two runs in one process, must
    not make a name that is in use again (a rename would replace that block)."""
    a, b = Blocks(token, str(tmp_path)), Blocks(token, str(tmp_path))
    assert a._name("u", 1) != b._name("u", 1)
    assert blocks.run_token() != blocks.run_token()


def test_a_short_frame_with_the_magic_is_no_reference() -> None:
    from sedamp.runtime.flow import Chunk

    bad = blocks.REF_MAGIC + b"\x01"
    assert not blocks.is_ref(bad)
    assert Chunk([0], [1], memoryview(b"x"), nbufs=[1], bufs=[bad]).nbytes == 1 + len(bad)


def test_a_sweep_skips_what_it_may_not_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Blocks("1.1.0", str(tmp_path)).share(b"p" * (5 * MIB))

    def denied(path: str) -> None:
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(os, "unlink", denied)
    assert blocks.sweep_stale(str(tmp_path)) == 0 and len(names(tmp_path)) == 1


@pytest.mark.parametrize(
    ("setting", "want"),
    [("", blocks.SHARE_BYTES), ("0", 0), ("off", 0), ("False", 0), ("8MiB", 8 * MIB), ("8mib", 8 * MIB),
     ("65536", 65536), ("64 KiB", 64 * 1024), ("lots", blocks.SHARE_BYTES)],
)  # fmt: skip
def test_the_setting_turns_blocks_off_or_sets_the_threshold(setting: str, want: int) -> None:
    assert blocks.threshold(setting) == want


def test_an_expired_leases_blocks_are_not_freed_when_its_redelivery_is_acked(tmp_path: Path, token: str) -> None:
    """Its first worker may still be reading them: a producer must not get them."""
    from sedamp.runtime.flow import Chunk, LeaseBook

    b = Blocks(token, str(tmp_path))
    ref = b.share(b"e" * (5 * MIB))
    now = [0.0]
    book = LeaseBook(10.0, lambda: now[0])
    book.done_bufs = []
    chunk = Chunk([0], [1], memoryview(b"x"), nbufs=[1], bufs=[ref])
    first = book.issue(b"w1", [chunk], 0, 1, chunk.nbytes, now[0])
    now[0] = 11.0
    assert book.due() == [first]
    book.take(first)
    second = book.issue(b"w2", [chunk], 0, 1, chunk.nbytes, now[0])
    book.done(second)
    assert book.done_bufs == [ref]
    assert b.free(book.done_bufs, book.unsafe) == 0 and states(tmp_path) == ["u"]


def test_a_48_mb_array_crosses_with_no_copy_on_the_python_heap(tmp_path: Path, token: str) -> None:
    """The producer writes the array into the block (the one copy, by the kernel, from
    the array's memory); the consumer reads it in place. Neither side allocates its
    bytes again."""
    import tracemalloc

    np = pytest.importorskip("numpy")
    a = np.full(6_000_000, 3.0)  # 48 MB
    producer, consumer = Blocks(token, str(tmp_path)), Blocks(token, str(tmp_path))
    tracemalloc.start()
    try:
        packed = wire.pack_event({"a": a})
        refs = [producer.share(x) for x in packed.bufs]
        payload._blocks = consumer
        got = wire.unpack_events([bytes(packed)], 1, [1], refs)[0]["a"]
        total = float(got.sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        payload._blocks = None
    assert total == 3.0 * 6_000_000
    assert peak < 4 * MIB, f"{peak:,} bytes allocated for a 48 MB array"  # a copy would be 48 MB


def test_a_full_dev_shm_sends_the_buffer_as_a_frame_and_leaves_no_block(
    tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(28, "No space left on device")

    payload._blocks = Blocks(token, str(tmp_path))
    monkeypatch.setattr(os, "pwrite", full)
    try:
        big = b"f" * blocks.SHARE_BYTES
        assert payload.share([big])[0] is big
        assert payload._blocks.failed == 1
    finally:
        payload._blocks = None
    assert names(tmp_path) == []
