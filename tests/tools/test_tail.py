"""``warmcast tail`` prints what hostile producers put in messages without letting it act
on the terminal: every control and bidirectional character comes out escaped."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.tail import COLUMNS, json_line, printable, row

#: Model ids as an attacker would write them.
HOSTILE = [
    "m\x1b[2J\x1b[H",  # clear the screen, cursor home
    "m\x1b]0;pwned\x07",  # set the terminal's title
    "m\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\",  # a hyperlink
    "line one\nfake-model  warm  2099-01-01T00:00:00Z",  # a forged row
    "m\rover",
    "nul\x00del\x7f",
    "csi\x9b31m",  # C1 control sequence introducer
    "nel\x85next",
    "fake\u202egnp.exe",  # right-to-left override
    "iso\u2066late\u2069",
    "mark\u200f\u061c",
    "sep\u2028line\u2029para",
    "bom\ufeffzero\u200bwidth",
    "tag\U000e0041\U000e007f",
    "back\\x1b",  # a literal backslash: must not read as the escape of ESC
]


def unescape(text: str) -> str:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def doc_for(kind: str, model_id: str) -> dict[str, Any]:
    """A message of ``kind`` whose every text field is ``model_id``."""
    if kind == "alerts":
        return {"ts": 0, "state": model_id, "severity": model_id, "kind": model_id,
                "subject": model_id, "summary": model_id}  # fmt: skip
    doc: dict[str, Any] = {"model_id": model_id, "ts": model_id, "issued_at": 0, "start": 60}
    doc.update(action=model_id, end=model_id, reason=model_id, policy_version=model_id)
    return doc


@pytest.mark.parametrize("model_id", HOSTILE)
@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_rows_escape_every_control_and_bidi_character(kind: str, model_id: str) -> None:
    line = row(kind, orjson.dumps(doc_for(kind, model_id)))
    assert line.isprintable(), repr(line)
    wide = printable(model_id)
    assert wide[:10] in line
    if "\x1b" in model_id:
        assert "\\x1b" in line


@pytest.mark.parametrize("model_id", HOSTILE)
def test_json_lines_escape_them_and_still_decode_to_the_message(model_id: str) -> None:
    doc = {"model_id": model_id, "reason": model_id, "n": 1}
    line = json_line(orjson.dumps(doc))
    assert line.isprintable(), repr(line)
    assert orjson.loads(line) == doc
    undecodable = json_line(b"\xff" + model_id.encode())
    assert undecodable.isprintable() and "undecodable" in orjson.loads(undecodable)


@given(st.text())
def test_escaped_text_is_printable_and_reads_one_way(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert unescape(shown) == text


@given(st.dictionaries(st.text(), st.text() | st.integers(-(2**53), 2**53) | st.none(), max_size=4))
def test_json_lines_are_printable_and_lossless(doc: dict[str, Any]) -> None:
    line = json_line(orjson.dumps(doc))
    assert line.isprintable()
    assert orjson.loads(line) == doc


def test_ordinary_ids_are_printed_as_they_are() -> None:
    for model_id in ("llama-8b", "sdxl/v1.5", "模型-中文", "évian", "a b"):
        assert printable(model_id) == model_id
        assert model_id in row("warmup", orjson.dumps({"model_id": model_id}))
