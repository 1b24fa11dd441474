"""Put on PYTHONPATH by `tests/faults/test_launcher.py`: in the process launcher only,
the forks named in SEDAMP_TEST_FORKFAIL (1-based, comma separated) fail with EAGAIN,
as a fork does on a machine out of memory or processes. (A pids cgroup would make the
kernel refuse them, but it also refuses the threads of the processes that did start,
and which forks fail then depends on timing.)"""

import errno
import os
import sys

if "sedamp.runtime.launcher" in getattr(sys, "orig_argv", ()):
    _fail = {int(x) for x in os.environ.get("SEDAMP_TEST_FORKFAIL", "").split(",") if x}
    _fork = os.fork
    _count = [0]

    def _failing_fork() -> int:
        _count[0] += 1
        if _count[0] in _fail:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return _fork()

    os.fork = _failing_fork
