"""Named crash points: kill the process at a precise line, for money-safety tests.

`crash_point("after-launch")` does nothing unless the environment variable
`GPUCTL_CRASH_AT` names that point; then the process SIGKILLs itself — no cleanup,
no flushing, exactly like an OOM kill or a node loss. The e2e tests restart the
operator afterwards and check, from the simulated cloud's ledger, that every
request still ends with exactly one machine. Unset in production, a crash point
is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "GPUCTL_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
