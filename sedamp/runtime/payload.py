"""Large values in events: NumPy arrays and big byte strings, carried beside MessagePack.

An event is MessagePack, but a large buffer inside it does not travel inside the packed
bytes (where it would be copied into the packer, joined into a body, copied by ZeroMQ on
both sides and copied out again by the unpacker). It travels as its own ZeroMQ frame, as
Dask's protocol sends large buffers: the packed event holds a MessagePack extension that
names the buffer by its position among the event's buffers.

- ``EXT_ARRAY`` ``[dtype, shape, index]``: a NumPy array of at least OOB_BYTES; frame
  `index` of the event holds its bytes (C order). It is sent from the array's own memory
  and received as a read-only array over the received frame: no copy on either side.
- ``EXT_SMALL_ARRAY`` ``[dtype, shape, data]``: a smaller array, its bytes inline.
- ``EXT_BYTES`` ``[index]``: `bytes`, `bytearray` or `memoryview` of at least OOB_BYTES;
  received as `bytes` (one copy, out of the frame), the type a small one arrives as.

Arrays of Python objects are refused (they would need pickle), and so is any dtype a
peer names that holds objects: the wire carries data, never code or pointers. NumPy is
imported only when an array is met, so a run without arrays never loads it.

A packed event with buffers is a `Packed`: the packed bytes (what `len` counts) with
its buffers in ``.bufs``. Everything that moves packed events keeps them together; the
wire (`sedamp.runtime.wire`) puts them in frames.

Between processes of one host a buffer of at least blocks.SHARE_BYTES leaves as a
shared block instead (`share`, as an outlet sends): its frame is then a reference,
which `ext_hook` maps read-only through this process's `Blocks` (`attach`). The byte
bounds count a reference as the bytes it stands for (`buf_nbytes`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from sedamp.runtime import blocks

log = logging.getLogger(__name__)

# Buffers of at least this many bytes travel as their own frame. Below it, a frame costs
# more than the copy it saves (a frame is a ZeroMQ message of its own, ~1 us).
OOB_BYTES = 64 * 1024

EXT_ARRAY = 1
EXT_SMALL_ARRAY = 2
EXT_BYTES = 3


class Packed(bytes):
    """A packed event whose large buffers travel beside it (`bufs`, in order)."""

    bufs: list[Any]

    @property
    def nbytes(self) -> int:
        """The event's size on the wire: packed bytes and buffers."""
        return len(self) + bufs_nbytes(self.bufs)


def size_of(packed: bytes) -> int:
    """A packed event's size on the wire, its buffers included."""
    return packed.nbytes if type(packed) is Packed else len(packed)


def bufs_of(packed: bytes) -> list[Any]:
    return packed.bufs if type(packed) is Packed else []


def bufs_nbytes(bufs: list[Any]) -> int:
    """The bytes of buffers (memoryviews, bytes, received frames), a shared block's
    reference counting as the bytes it stands for."""
    return sum(map(buf_nbytes, bufs)) if bufs else 0


def buf_nbytes(buf: Any) -> int:
    """A buffer's bytes; a reference frame's, the block's, where this process reads
    blocks (elsewhere a reference is only its few bytes: a peer cannot inflate it)."""
    n: int = memoryview(buf).nbytes
    return blocks.ref_nbytes(buf) if n < OOB_BYTES and _blocks is not None and blocks.is_ref(buf) else n


# This process's side of the run's shared blocks (None: the run uses none), set by the
# role that starts here (`attach`): a reference frame among an event's buffers is read
# through it.
_blocks: blocks.Blocks | None = None


def attach(token: str) -> blocks.Blocks | None:
    """Read and write the shared blocks of run `token` in this process ("": none);
    returns them (None when the run or host has none)."""
    global _blocks
    _blocks = blocks.usable(token)
    return _blocks


def detach() -> None:
    """At exit: close this process's mappings of shared blocks, remove those it kept."""
    if _blocks is not None:
        _blocks.close()


def share(bufs: list[Any]) -> list[Any]:
    """`bufs` as they leave this process: each of at least `share_bytes` written into
    a shared block and replaced by its reference, when the run uses blocks."""
    b = _blocks
    if b is None:
        return bufs
    return [_shared(b, x) if memoryview(x).nbytes >= b.share_bytes else x for x in bufs]


def _shared(b: blocks.Blocks, buf: Any) -> Any:
    """`buf` written into a block, or `buf` itself (a frame) when no block can be made
    (/dev/shm full or gone): blocks only ever make a crossing cheaper."""
    try:
        return b.share(buf)
    except OSError as exc:
        if not b.failed:
            log.warning("cannot write a shared-memory block (%s): large buffers go as frames", exc)
        b.failed += 1
        return buf


class _Big:
    """A large byte string found in an event, to be sent as a frame (`default` turns it
    into an EXT_BYTES)."""

    __slots__ = ("buf",)

    def __init__(self, buf: Any) -> None:
        self.buf = buf


class Collector:
    """The packer's `default` hook: arrays (and marked byte strings) become extensions,
    their large buffers collected in `bufs` for the event being packed. `inline`: keep
    every buffer inside the packed bytes (ext `EXT_SMALL_ARRAY`) instead."""

    def __init__(self) -> None:
        self.bufs: list[Any] = []
        self.inline = False

    def __call__(self, obj: Any) -> Any:
        if type(obj) is _Big:
            self.bufs.append(obj.buf)
            return msgpack.ExtType(EXT_BYTES, msgpack.packb([len(self.bufs) - 1]))
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(obj, np.ndarray):
                return self._array(np, obj)
            if isinstance(obj, np.generic):
                return obj.item()  # a NumPy scalar travels as the Python number it holds
        raise TypeError(f"can not serialize {type(obj).__name__!r} object")

    def _array(self, np: Any, a: Any) -> Any:
        if a.dtype.hasobject:
            raise ValueError("an array of Python objects cannot be sent (it would need pickle); use a numeric dtype")
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)  # the one copy a strided view costs
        shape = list(a.shape)
        dtype = a.dtype.str if a.dtype.names is None else a.dtype.descr  # a record's fields, by name
        if self.inline or a.nbytes < OOB_BYTES:
            return msgpack.ExtType(EXT_SMALL_ARRAY, msgpack.packb([dtype, shape, a.tobytes()]))
        self.bufs.append(a.reshape(-1).view(np.uint8).data if a.size else b"")
        return msgpack.ExtType(EXT_ARRAY, msgpack.packb([dtype, shape, len(self.bufs) - 1]))


def carries(value: Any) -> bool:
    """True for a NumPy value this module carries (an array of a dtype without objects,
    or a scalar)."""
    np = sys.modules.get("numpy")
    if np is None:
        return False
    if isinstance(value, np.ndarray):
        return not value.dtype.hasobject
    return isinstance(value, np.generic)


def mark_big(value: Any) -> tuple[Any, int]:
    """`value` with every bytes, bytearray or memoryview of at least OOB_BYTES inside it
    wrapped to travel as a frame (containers rebuilt, nothing copied), and how many."""
    t = type(value)
    if t is bytes or t is bytearray or t is memoryview:
        return (_Big(value), 1) if len(value) >= OOB_BYTES else (value, 0)
    if t is dict:
        out: dict[Any, Any] = {}
        found = 0
        for k, v in value.items():
            out[k], n = mark_big(v)
            found += n
        return (out, found) if found else (value, 0)
    if t is list or t is tuple:
        items = []
        found = 0
        for v in value:
            m, n = mark_big(v)
            items.append(m)
            found += n
        return (items, found) if found else (value, 0)
    return value, 0


class PayloadError(ValueError):
    """A peer's extension does not describe a buffer it sent."""


def ext_hook(bufs: Sequence[Any], base: list[int]) -> Callable[[int, bytes], Any]:
    """The unpacker's hook for one message: `bufs` its buffer frames; ``base[0]`` is the
    index of the first buffer of the event being decoded and ``base[1]`` how many it
    has (the caller sets both before each event)."""

    def hook(code: int, data: bytes) -> Any:
        try:
            fields = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise PayloadError(f"extension {code} is not MessagePack: {type(exc).__name__}") from None
        if code == EXT_BYTES:
            return bytes(_buffer(bufs, base, fields, 0))
        if code == EXT_ARRAY:
            return array_of(fields, _buffer(bufs, base, fields, 2))
        if code == EXT_SMALL_ARRAY:
            if not isinstance(fields, list) or len(fields) != 3 or not isinstance(fields[2], bytes):
                raise PayloadError("malformed inline array")
            return array_of(fields, fields[2])
        return msgpack.ExtType(code, data)

    return hook


def _buffer(bufs: Sequence[Any], base: list[int], fields: Any, at: int) -> Any:
    if not isinstance(fields, list) or len(fields) <= at:
        raise PayloadError("malformed buffer reference")
    i = fields[at]
    start, count = base
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < count or start + i >= len(bufs):
        raise PayloadError(f"buffer {i!r} is not among the {count} sent with the event")
    buf = bufs[start + i]
    if blocks.is_ref(buf):  # it looks at the length first: a data frame is not read
        if _blocks is None:
            raise PayloadError("a shared block, and this process reads none (another host?)")
        try:
            return _blocks.open(buf)
        except (blocks.BlockError, OSError) as exc:
            raise PayloadError(str(exc)) from None
    return buf


def array_of(fields: list[Any], buf: Any) -> Any:
    """A read-only NumPy array over `buf` (no copy), checked against its header."""
    try:
        import numpy as np
    except ImportError:
        raise PayloadError("an event holds a NumPy array, and NumPy is not installed") from None
    dtype_s, shape = fields[0], fields[1]
    if not isinstance(dtype_s, str | list) or not isinstance(shape, list) or not all(_dim(d) for d in shape):
        raise PayloadError("malformed array header")
    try:
        dtype = np.dtype(dtype_s if isinstance(dtype_s, str) else _descr(dtype_s))
    except (TypeError, ValueError, KeyError, RecursionError):
        raise PayloadError(f"unknown dtype {dtype_s!r}") from None
    if dtype.hasobject:
        raise PayloadError(f"dtype {dtype_s!r} holds Python objects")
    size = 1
    for d in shape:
        size *= d
    view = memoryview(buf)
    if size * dtype.itemsize != view.nbytes:
        raise PayloadError(f"an array of {shape} {dtype_s} needs {size * dtype.itemsize} bytes, got {view.nbytes}")
    a = np.frombuffer(view, dtype=dtype, count=size).reshape(shape)
    a.flags.writeable = False
    return a


def _descr(fields: list[Any]) -> list[tuple[Any, ...]]:
    """A record dtype's `descr` as NumPy takes it back: MessagePack made its tuples lists."""
    out = []
    for f in fields:
        if not isinstance(f, list) or not 2 <= len(f) <= 3:
            raise ValueError("malformed record field")
        name, fmt, *shape = f
        out.append((name, _descr(fmt) if isinstance(fmt, list) else fmt, *(tuple(s) for s in shape)))
    return out


def _dim(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d >= 0


def nbufs_of(packed: Sequence[bytes]) -> list[int]:
    """How many buffers each packed event has, or [] when none has any (the wire's
    `nbufs`); the check runs at C speed when there is none."""
    if Packed not in map(type, packed):
        return []
    return [len(p.bufs) if type(p) is Packed else 0 for p in packed]


def all_bufs(packed: Sequence[bytes]) -> list[Any]:
    """The buffers of packed events, in order."""
    return [b for p in packed if type(p) is Packed for b in p.bufs]
