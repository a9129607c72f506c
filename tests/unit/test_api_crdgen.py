"""The committed CRD YAML is exactly what the attrs types emit, and it documents every field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from gpuctl.api import crdgen
from gpuctl.api.schema import Rule, SchemaError, cel_string, doc, schema_of

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "manifests" / "crd"


@pytest.mark.parametrize("name", sorted(crdgen.outputs()))
def test_committed_yaml_matches_the_types(name: str) -> None:
    """Drift test: change gpuctl/api, then run `python -m gpuctl.api.crdgen`."""
    committed = (CRD_DIR / name).read_text() if (CRD_DIR / name).is_file() else ""
    assert committed == crdgen.outputs()[name], (
        f"manifests/crd/{name} is stale: run `.venv/bin/python -m gpuctl.api.crdgen`"
    )


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crdgen.outputs())


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property schema below `schema`, with its dotted path."""
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("crd", crdgen.crds(), ids=lambda c: c["metadata"]["name"])
def test_every_field_has_a_description(crd: dict[str, Any]) -> None:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert root["description"]
    missing = [
        path for path, prop in walk(root, "") if not prop.get("description") and path != ".metadata"
    ]
    assert missing == []


@pytest.mark.parametrize("crd", crdgen.crds(), ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    """Every node has a type; metadata is left to the server, spec is required."""
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    untyped = [path for path, prop in walk(root, "") if "type" not in prop]
    assert untyped == []
    assert root["properties"]["metadata"] == {"type": "object"}
    assert root["required"] == ["spec"]
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_names_and_columns() -> None:
    gnr, gpr, gnp = crdgen.crds()
    assert gnr["spec"]["names"]["shortNames"] == ["gnr"]
    assert gpr["spec"]["names"]["shortNames"] == ["gpr"]
    assert gnr["spec"]["names"]["categories"] == gpr["spec"]["names"]["categories"] == ["gpuctl"]
    columns = [c["name"] for c in gnr["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == [
        "GPU", "Count", "Capacity", "Phase", "Provider", "Region", "$/h", "Node", "Age"
    ]  # fmt: skip
    columns = [c["name"] for c in gpr["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Type", "Ready", "Offers", "Age"]
    assert gnp["spec"]["names"]["shortNames"] == ["gnp"]
    assert gnp["spec"]["names"]["categories"] == ["gpuctl"]
    columns = [c["name"] for c in gnp["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == [
        "GPUs", "GPU Limit", "Machines", "$/h", "$/h Limit", "Ready", "Age", "Weight", "GPUs Total"
    ]  # fmt: skip


def test_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load(crdgen.outputs()["kustomization.yaml"])
    assert kustomization["resources"] == [
        "gpuctl.io_gpunodepools.yaml",
        "gpuctl.io_gpunoderequests.yaml",
        "gpuctl.io_gpuproviders.yaml",
    ]


def test_key_rules_are_emitted() -> None:
    gnr, gpr, _ = crdgen.crds()
    spec = gnr["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert {"rule": "self == oldSelf"}.items() <= props["gpu"]["x-kubernetes-validations"][
        0
    ].items()
    assert props["capacityType"]["default"] == "on-demand"
    assert props["placement"]["default"] == "cheapest"
    assert props["gpu"]["properties"]["count"] == {
        "description": props["gpu"]["properties"]["count"]["description"],
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 16,
    }
    assert "ordered" in spec["x-kubernetes-validations"][0]["rule"]
    gspec = gpr["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert [r["fieldPath"] for r in gspec["x-kubernetes-validations"]] == [
        ".lambda",
        ".runpod",
        ".paperspace",
        ".crusoe",
        ".hyperstack",
        ".digitalocean",
    ]
    ref = gspec["properties"]["credentialsSecretRef"]
    assert ref["properties"]["key"]["default"] == "apiKey"
    assert ref["required"] == ["namespace", "name"]


def test_a_field_without_description_is_an_error() -> None:
    @attrs.define
    class Undocumented:
        x: int

    with pytest.raises(SchemaError, match="no doc"):
        schema_of(Undocumented)


def test_rule_and_cel_string() -> None:
    @attrs.define
    class Thing:
        __validations__ = (Rule("self.x > 0", "x must be positive", field_path=".x"),)
        x: int = attrs.field(metadata=doc("An x.", rules=[Rule("self < 10", "too big")]))

    schema = schema_of(Thing)
    assert schema["x-kubernetes-validations"] == [
        {"rule": "self.x > 0", "message": "x must be positive", "fieldPath": ".x"}
    ]
    assert schema["properties"]["x"]["x-kubernetes-validations"] == [
        {"rule": "self < 10", "message": "too big"}
    ]
    assert cel_string(r"^a\.b'c$") == r"'^a\\.b\'c$'"
