"""Child processes that never outlive their parent.

Used for etcd and kube-apiserver (the local control plane) and for the demo's
operator. Each child runs in its own session — a Ctrl-C in the terminal reaches
only the parent, which stops its children in order — and carries
PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it if the parent dies first, even by
SIGKILL. The death signal is tied to the thread that forks: start children from the
event loop's thread (the main one in gpuctl's commands and tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import attrs

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: own session, and SIGKILL when the parent process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()


@attrs.define
class ChildProcess:
    """One child: started with its output appended to `log_path`, stopped gracefully."""

    name: str
    args: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None  # None: inherit ours
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    async def start(self) -> None:
        if self._log is not None:  # started again after it exited
            self._log.close()
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=dict(self.env) if self.env is not None else None,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self) -> int | None:
        """Until the process exits: its exit status (None if never started)."""
        process = self.process
        return None if process is None else await process.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, up to `grace` seconds to exit, then SIGKILL."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
