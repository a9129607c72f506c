"""docs/api.md documents every field of both kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuctl.api.crdgen import crds

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        yield from paths(prop, path)
    if "items" in schema:
        yield from paths(schema["items"], prefix + "[]")


@pytest.mark.parametrize("crd", crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_every_field_is_documented(crd: dict[str, Any]) -> None:
    text = DOC.read_text()
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = [p for p in paths(root) if p.startswith(("spec.", "status."))]
    missing = [p for p in fields if f"`{p}`" not in text]
    assert missing == [], f"add these fields to docs/api.md: {missing}"
