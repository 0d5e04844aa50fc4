"""docs/protocol.md against marketdata/protocol.py: every struct documented field by field, every example valid."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from marketdata import protocol
from marketdata.protocol import CLIENT_MESSAGES, SERVER_MESSAGES, ErrorCode

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
HEADING = re.compile(r"^### `(\w+)`", re.MULTILINE)
ROW = re.compile(r"^\| `([\w.]+)` \|", re.MULTILINE)
NEXT_HEADING = re.compile(r"^#{2,3} ", re.MULTILINE)
EXAMPLE = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


def tag(cls: type[msgspec.Struct]) -> str:
    return str(cls.__struct_config__.tag)


def sections() -> dict[str, str]:
    """Each message's section: from its ``### `type` `` heading to the next heading."""
    text = DOC.read_text()
    result = {}
    for match in HEADING.finditer(text):
        end = NEXT_HEADING.search(text, match.end())
        result[match.group(1)] = text[match.end() : end.start() if end else len(text)]
    return result


def struct_type(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct inside an annotation (``PriceData``, ``CandleFlags | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    for arg in typing.get_args(annotation):
        found = struct_type(arg)
        if found is not None and typing.get_origin(annotation) not in (list, dict):
            return found
    return None


def flat_fields(cls: type[msgspec.Struct], prefix: str = "") -> set[str]:
    """``type`` plus every field, nested Structs' fields dotted: ``data``, ``data.price``, ..."""
    names = {"type"} if not prefix and cls.__struct_config__.tag_field else set()
    hints = typing.get_type_hints(cls)
    for name in cls.__struct_fields__:
        names.add(prefix + name)
        nested = struct_type(hints[name])
        if nested is not None:
            names |= flat_fields(nested, f"{prefix}{name}.")
    return names


def expected_rows(cls: type[msgspec.Struct]) -> str:
    """What to paste into the doc when a struct grew (shown when the test fails)."""
    return "\n".join(f"| `{name}` | ? | ? |" for name in sorted(flat_fields(cls)))


ALL = [*SERVER_MESSAGES, *CLIENT_MESSAGES]


def test_every_struct_has_a_section_and_nothing_else_does() -> None:
    assert sorted(sections()) == sorted(tag(cls) for cls in ALL)


@pytest.mark.parametrize("cls", ALL, ids=tag)
def test_documented_fields_are_exactly_the_structs(cls: type[msgspec.Struct]) -> None:
    section = sections()[tag(cls)]
    documented = ROW.findall(section.split("```json")[0])
    assert len(documented) == len(set(documented)), f"a field is listed twice under {tag(cls)}"
    expected = flat_fields(cls)
    assert set(documented) == expected, (
        f"docs/protocol.md `{tag(cls)}`: missing {sorted(expected - set(documented))}, "
        f"extra {sorted(set(documented) - expected)}; the struct's fields:\n{expected_rows(cls)}"
    )


@pytest.mark.parametrize("cls", ALL, ids=tag)
def test_each_example_decodes_with_its_struct(cls: type[msgspec.Struct]) -> None:
    examples = EXAMPLE.findall(sections()[tag(cls)])
    assert examples, f"no JSON example under {tag(cls)}"
    for example in examples:
        decoded = msgspec.json.decode(example, type=cls)
        raw = json.loads(example)
        assert raw["type"] == tag(cls)
        # Strict: the example uses no field the struct would silently ignore.
        assert flat_keys(raw) <= flat_fields(cls), flat_keys(raw) - flat_fields(cls)
        if cls in SERVER_MESSAGES:
            assert type(protocol.decode_server(example)) is cls
            assert json.loads(protocol.encode(decoded)) == raw  # what the service would send, byte for byte in JSON
        else:
            assert type(protocol.decode_client(example)) is cls


def flat_keys(raw: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in raw.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and key in ("data", "flags"):
            keys |= flat_keys(value, f"{prefix}{key}.")
    return keys


def test_every_error_code_and_close_code_is_documented() -> None:
    text = DOC.read_text()
    codes = [value for name, value in vars(ErrorCode).items() if name.isupper()]
    assert codes
    for code in codes:
        assert re.search(rf"^\| `{code}` \|", text, re.MULTILINE), f"error code {code} is not in the table"
    closes = {name: value for name, value in vars(protocol).items() if name.startswith("CLOSE_")}
    assert closes
    for name, value in closes.items():
        assert re.search(rf"^\| {value} \| `{name}` \|", text, re.MULTILINE), f"{name} = {value} is not in the table"


def test_the_gap_reasons_and_query_parameters_are_documented() -> None:
    text = DOC.read_text()
    for reason in ("ring_overflow", "ahead_of_server", "slow_consumer"):
        assert f"| `{reason}` |" in text
    for parameter in ("last_seq", "resume", "on_slow", "candles", "candle_rate"):
        assert f"| `{parameter}` | `" in text
