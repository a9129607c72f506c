"""The layering rule of hack/check_layers.py holds for the tree, and catches violations."""

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "hack/check_layers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tree_respects_layers() -> None:
    assert _checker().check(ROOT) == []


def test_relative_imports_resolve_to_their_package() -> None:
    checker = _checker()
    tree = ast.parse("from ..providers import base\nfrom . import queue\n")
    found = checker.imports_of(tree, "gpuctl.runtime.informer", False)
    assert [t for _, t in found] == ["gpuctl.providers", "gpuctl.runtime"]
    assert checker.LAYERS["gpuctl.providers"] > checker.LAYERS["gpuctl.runtime"]
