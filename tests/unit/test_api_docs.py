"""Every field is documented: GNR and GPR fields in docs/api.md, GPUNodePool ones in pools.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuctl.api.crdgen import crds

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_OF = {"GPUNodePool": DOCS / "pools.md"}


def paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        yield from paths(prop, path)
    if "items" in schema:
        yield from paths(schema["items"], prefix + "[]")


@pytest.mark.parametrize("crd", crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_every_field_is_documented(crd: dict[str, Any]) -> None:
    doc = DOC_OF.get(crd["spec"]["names"]["kind"], DOCS / "api.md")
    text = doc.read_text()
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = [p for p in paths(root) if p.startswith(("spec.", "status."))]
    missing = [p for p in fields if f"`{p}`" not in text]
    assert missing == [], f"add these fields to docs/{doc.name}: {missing}"
