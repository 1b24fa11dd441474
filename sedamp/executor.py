"""Where runtime processes run. The one place that knows: today, local OS processes.

The controller asks an executor to `start` a role with its config and gets back a
`Proc` handle: pid, a sentinel file descriptor that becomes readable when the process
ends (so the controller notices a death at once, beside its sockets), the exit code,
and terminate/kill. A cluster executor will implement the same interface.

Local processes are fresh interpreters (``python -m sedamp._child ROLE``) that read
their config as JSON on stdin. Unlike multiprocessing's spawn they never re-import the
user's ``__main__`` module, so a script calling ``sedamp.run()`` needs no
``if __name__ == "__main__"`` guard, and ``ps`` shows what each process is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from typing import Any, Protocol


class Proc(Protocol):
    name: str

    @property
    def pid(self) -> int: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


class Executor(Protocol):
    def start(self, name: str, role: str, config: Any) -> Proc: ...


class LocalProc:
    """A local child process with a pidfd as its sentinel."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        self.name = name
        self._popen = popen
        self._pidfd = os.pidfd_open(popen.pid)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def sentinel(self) -> int:
        return self._pidfd

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def terminate(self) -> None:
        if self.is_alive():
            self._popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        self.close()

    def close(self) -> None:
        if self._pidfd >= 0 and self._popen.returncode is not None:
            os.close(self._pidfd)
            self._pidfd = -2 - self._pidfd  # keep it unique and negative for lookups


class LocalExecutor:
    def start(self, name: str, role: str, config: Any) -> Proc:
        payload = json.dumps({"role": role, "config": asdict(config)}).encode()
        popen = subprocess.Popen(
            [sys.executable, "-m", "sedamp._child", role, name],
            stdin=subprocess.PIPE,
            close_fds=True,
        )
        assert popen.stdin is not None
        popen.stdin.write(payload)
        popen.stdin.close()
        return LocalProc(name, popen)
