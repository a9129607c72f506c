"""`decode_list`: json.loads of a List, each item transformed as soon as it is decoded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuctl.runtime.client import ListDecoder, decode_list

JSON = dict[str, Any]
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


def tagged(obj: JSON) -> JSON:
    return {"seen": True, **obj}


@settings(max_examples=30, deadline=None)
@given(
    items=st.lists(st.dictionaries(st.text(max_size=5), VALUES, max_size=4), max_size=5),
    extra=st.dictionaries(st.sampled_from(["kind", "apiVersion", "metadata"]), VALUES),
    indent=st.sampled_from([None, 0, 2]),
)
def test_it_is_json_loads_with_items_transformed(
    items: list[JSON], extra: JSON, indent: int | None
) -> None:
    text = json.dumps({**extra, "items": items}, indent=indent)
    assert decode_list(text, tagged) == {**extra, "items": [tagged(i) for i in items]}


def test_each_item_is_transformed_in_order_and_only_items_are() -> None:
    seen: list[JSON] = []

    def item(obj: JSON) -> JSON:
        seen.append(obj)
        return {"n": obj["n"]}

    text = ' { "metadata" : {"items": [1]} , "items" : [ {"n": 1, "big": "x"} ,{"n":2}] }\n'
    assert decode_list(text, item) == {"metadata": {"items": [1]}, "items": [{"n": 1}, {"n": 2}]}
    assert [s["n"] for s in seen] == [1, 2]
    assert decode_list('{"items": []}', item) == {"items": []}
    assert decode_list("{}", item) == {}


@pytest.mark.parametrize("text", ["[]", '{"items": [{} {}]}', '{"a" 1}', '{"a": 1 "b": 2}', ""])
def test_malformed_answers_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        decode_list(text, tagged)


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(st.dictionaries(st.text(max_size=5), VALUES, max_size=4), max_size=5),
    extra=st.dictionaries(st.sampled_from(["kind", "apiVersion", "metadata"]), VALUES),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_fed_in_pieces_it_decodes_the_same(items: list[JSON], extra: JSON, cuts: list[int]) -> None:
    """As the answer arrives: cut anywhere (inside a number, a string, between tokens)."""
    text = json.dumps({**extra, "items": items}, separators=(",", ":")) + "\n"
    decoder = ListDecoder(tagged)
    last = 0
    for cut in sorted({min(c, len(text)) for c in cuts}):
        decoder.feed(text[last:cut])
        last = cut
    decoder.feed(text[last:])
    assert decoder.finish() == {**extra, "items": [tagged(i) for i in items]}


def test_a_cut_off_answer_raises_value_error() -> None:
    decoder = ListDecoder(tagged)
    decoder.feed('{"items": [{"a": 1}, {"b": 12')
    with pytest.raises(ValueError):
        decoder.finish()
