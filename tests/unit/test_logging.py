import json
import logging

from gpuctl.util.logging import JsonFormatter


def test_json_lines_carry_extra_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "gpuctl.x", "levelname": "INFO", "msg": "launched %s", "args": ("i-1",)}
    )
    record.request = "train"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "launched i-1"
    assert line["request"] == "train"
    assert line["level"] == "info"
