"""JSON dicts from the API server <-> gpuctl's attrs types, via one cattrs converter.

Semantics:
- Keys are the fields' JSON names (camelCase, or the `doc(name=...)` override);
  attributes are snake_case.
- Reading ignores unknown keys (newer servers, managedFields, other writers'
  fields); a missing required field or a value of the wrong type raises
  `ObjectError` naming the path.
- Writing omits a field whose value is None, or is an empty collection where the
  field's default is an empty collection: `has(self.x)` in CEL stays false and
  what the user left out stays out. Plain defaults (e.g. `capacityType:
  on-demand`) are written, as the server would have filled them anyway.
- Decimals are written in plain notation, datetimes as RFC 3339 UTC with whole
  seconds (`2025-01-02T03:04:05Z`, the precision of metav1.Time).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from gpuctl.api.schema import json_name
from gpuctl.api.units import format_price, parse_price

T = TypeVar("T")


class ObjectError(ValueError):
    """A dict does not have the shape of the gpuctl type it was read as."""


def format_time(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.datetime.fromisoformat(value)
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(Decimal, lambda v, _: parse_price(v))
    conv.register_unstructure_hook(Decimal, format_price)
    conv.register_structure_hook(datetime.datetime, lambda v, _: parse_time(v))
    conv.register_unstructure_hook(datetime.datetime, format_time)

    def structure_factory(cls: type[Any]) -> Any:
        renames: dict[str, Any] = {f.name: override(rename=json_name(f)) for f in attrs.fields(cls)}
        return make_dict_structure_fn(cls, conv, **renames)

    def unstructure_factory(cls: type[Any]) -> Any:
        overrides: dict[str, Any] = {
            f.name: override(rename=json_name(f), omit_if_default=_omit_if_default(f))
            for f in attrs.fields(cls)
        }
        return make_dict_unstructure_fn(cls, conv, **overrides)

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


def _omit_if_default(field: attrs.Attribute[Any]) -> bool:
    """Omit None-defaulted fields when None, factory-defaulted ones when empty/default."""
    return field.default is None or isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]


converter = _make_converter()


def structure(data: Any, cls: type[T]) -> T:
    """Read `data` (a JSON-like dict) as `cls`; ObjectError if it does not fit."""
    try:
        return converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path=cls.__name__))
        raise ObjectError(problems) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ObjectError(f"{cls.__name__}: {exc}") from exc


def unstructure(value: Any) -> Any:
    """The JSON-like form of an attrs value (dicts, lists, strings, numbers)."""
    return converter.unstructure(value)
