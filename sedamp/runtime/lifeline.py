"""What every runtime child process does at start: tie its life to its parent, leave
Ctrl-C to the controller, and name itself for `ps`. Pure of process roles: each role
module calls these from its entry function."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1

# How often a child checks that its parent (the controller) is still alive when the
# kernel cannot tell it (non-Linux). Short enough that an orphan is gone within a second.
PARENT_CHECK_PERIOD_S = 0.5


def become_child(parent_pid: int) -> None:
    """Call first in a child: ignore SIGINT (the controller coordinates Ctrl-C, which the
    terminal sends to the whole process group) and die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_NAME = 15


def set_name(name: str) -> None:
    """Name this process as `ps -o comm`, `top` and psutil show it (15 bytes on Linux);
    forked children would otherwise all look like their launcher."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover
            pass


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid
