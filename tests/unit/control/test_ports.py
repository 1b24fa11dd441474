"""sedamp.control.ports.ControlLinks: messages held for children that have not
registered are sent when they do, and dropped when they exit or never come."""

from __future__ import annotations

from typing import Any

from sedamp.control import ports
from sedamp.control.ports import ControlLinks
from sedamp.runtime import wire


class FakeRouter:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


def links() -> tuple[ControlLinks, FakeRouter, list[float]]:
    now = [0.0]
    cl = ControlLinks(clock=lambda: now[0])
    router = FakeRouter()
    cl.ctl = router  # type: ignore[assignment]
    return cl, router, now


STOP: Any = wire.simple(wire.STOP, 0)


def test_held_messages_go_out_when_the_child_registers() -> None:
    cl, router, _ = links()
    cl.send("w:a:0:1", STOP)
    assert router.sent == []
    cl.register(b"w:a:0:1")
    assert router.sent == [[b"w:a:0:1", *STOP]] and not cl.pending


def test_messages_for_a_child_that_exits_before_registering_are_dropped() -> None:
    cl = ControlLinks()
    cl.send("w:a:0:1", wire.simple(wire.RETIRE))
    cl.forget("w:a:0:1")  # its exit was seen
    assert not cl.pending


def test_messages_for_a_child_that_never_registers_are_dropped_after_a_deadline() -> None:
    ttl = ports.PENDING_TTL_S
    cl, _, now = links()
    cl.send("w:a:0:1", STOP)
    now[0] = ttl / 2
    cl.send("w:a:0:1", STOP)
    cl.send("w:b:0:2", STOP)
    now[0] = ttl + 1
    cl.send("w:c:0:3", STOP)
    assert set(cl.pending) == {b"w:b:0:2", b"w:c:0:3"}  # a's oldest is past the deadline
    assert len(cl.pending[b"w:b:0:2"]) == 1


class SignalledRouter(FakeRouter):
    """A router whose first send is where Ctrl-C's handler runs: pyzmq sends a message
    frame by frame in Python, so a handler that sends too could put its frames between
    the frames of the message in progress. Records sends begun inside another."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self.handler = handler
        self.depth = 0
        self.nested: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        if self.depth:
            self.nested.append(frames)
        self.depth += 1
        try:
            if self.handler is not None:
                handler, self.handler = self.handler, None
                handler()
            super().send_multipart(frames, flags)
        finally:
            self.depth -= 1


def test_a_send_from_a_signal_handler_waits_for_the_send_it_interrupted() -> None:
    cl = ControlLinks(clock=lambda: 0.0)
    halt: Any = wire.simple(wire.HALT)
    router = SignalledRouter(lambda: cl.send("src", halt))
    cl.ctl = router  # type: ignore[assignment]
    cl.register(b"w1")
    cl.register(b"src")
    cl.send("w1", STOP)
    assert router.nested == []
    assert router.sent == [[b"w1", *STOP], [b"src", *halt]]
    cl.send("src", halt)  # and afterwards sends go straight out
    assert router.sent[-1] == [b"src", *halt] and len(router.sent) == 3
