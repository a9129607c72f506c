"""Structured JSON logs, one object per line, keyed by the object they are about.

`log.info("launched", extra={"request": name, "provider": p})`: every `extra`
field lands in the JSON object. Credentials never reach a log: code passes ids and
names, not configs; `DriverConfig.api_key` is excluded from reprs.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "info", *, json_format: bool = True) -> None:
    """Configure the root logger once for a command (the operator, the simulator, the demo)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would log every simulated-cloud request at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
