"""Python end of hack/browser/driver.mjs: a headless Debian chromium driven by playwright-core.

`async with Browser.start() as browser:` spawns `node hack/browser/driver.mjs`, which
launches /usr/bin/chromium (Playwright's own browser download does not work here)
with --headless --no-sandbox --disable-gpu --disable-background-networking
--disable-component-update --no-first-run, and answers one JSON line per command.
`missing()` says what is not installed (`make browser-deps` installs both).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "hack" / "browser" / "driver.mjs"
PLAYWRIGHT = ROOT / "hack" / "browser" / "node_modules" / "playwright-core"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class BrowserError(AssertionError):
    """A command the browser could not carry out (a selector that never showed, ...)."""


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not PLAYWRIGHT.is_dir():
        return "playwright-core is not installed (make browser-deps)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (make browser-deps: apt-get install chromium)"
    return None


class Browser:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls) -> AsyncIterator[Browser]:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "CHROMIUM": CHROMIUM},
            limit=16 * 1024 * 1024,
        )
        browser = cls(process)
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.call("close"), 10)
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def call(self, op: str, **args: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self._lock:
            command = {"id": next(self._ids), "op": op, **args}
            self.process.stdin.write((json.dumps(command) + "\n").encode())
            await self.process.stdin.drain()
            line = await self.process.stdout.readline()
        if not line:
            raise BrowserError(f"the browser driver exited during {op}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(f"{op} {args}: {answer['error']}")
        return answer["value"]

    async def wait_until(self, body: str, arg: Any = None, timeout: float = 60) -> None:
        """Until the JavaScript `body` (a function body of `arg`) returns truthy in the page."""
        await self.call("waitForFunction", body=body, arg=arg, timeout=int(timeout * 1000))

    async def evaluate(self, body: str, arg: Any = None) -> Any:
        return await self.call("evaluate", body=body, arg=arg)
