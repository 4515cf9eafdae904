"""
Reading docs/PROTOCOL.md: the parser of its msgpack notation (section 3), and
loaders for its test vectors (section 11) and its worked example (section 10),
so tests can check the codec, the server and the clients against what the
document says, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


# -- the notation of docs/PROTOCOL.md, section 3 -----------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<punct>[\[\]{}:,])
      | (?P<str>"(?:[^"\\]|\\.)*")
      | bin\((?P<bin>[0-9a-f]*)\)
      | (?P<word>nil|true|false)
      | (?P<float>-?\d+\.\d+(?:e[+-]?\d+)?)
      | (?P<int>-?\d+)
    )""",
    re.VERBOSE,
)

_WORDS: dict[str, Any] = {"nil": None, "true": True, "false": False}


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot parse {text[position:]!r}")
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "str":
            tokens.append(("value", json.loads(value)))
        elif kind == "bin":
            if len(value) % 2:
                raise ValueError(f"odd number of hex digits in bin({value})")
            tokens.append(("value", bytes.fromhex(value)))
        elif kind == "word":
            tokens.append(("value", _WORDS[value]))
        elif kind == "float":
            tokens.append(("value", float(value)))
        elif kind == "int":
            tokens.append(("value", int(value)))
        else:
            tokens.append(("punct", value))
    return tokens


def parseNotation(text: str) -> Any:
    """
    Parse one value written in the protocol document's msgpack notation.

    @raise ValueError: if C{text} is not exactly one such value.
    """
    tokens = _tokenize(text)
    position = 0

    def expect(punct: str) -> None:
        nonlocal position
        if position >= len(tokens) or tokens[position] != ("punct", punct):
            raise ValueError(f"expected {punct!r} in {text!r}")
        position += 1

    def peek(punct: str) -> bool:
        return position < len(tokens) and tokens[position] == ("punct", punct)

    def value() -> Any:
        nonlocal position
        if position >= len(tokens):
            raise ValueError(f"unexpected end of {text!r}")
        kind, token = tokens[position]
        position += 1
        if kind == "value":
            return token
        if token == "[":
            items: list[Any] = []
            while not peek("]"):
                if items:
                    expect(",")
                items.append(value())
            expect("]")
            return items
        if token == "{":
            mapping: dict[Any, Any] = {}
            while not peek("}"):
                if mapping:
                    expect(",")
                key = value()
                expect(":")
                mapping[key] = value()
            expect("}")
            return mapping
        raise ValueError(f"unexpected {token!r} in {text!r}")

    result = value()
    if position != len(tokens):
        raise ValueError(f"trailing tokens in {text!r}")
    return result


def parseHex(text: str) -> bytes:
    """
    The bytes written in hex in C{text}, spaces and newlines ignored (the
    document spaces its frames for reading).
    """
    return bytes.fromhex("".join(text.split()))


# -- reading docs/PROTOCOL.md ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vector:
    """
    One test vector of the protocol document.
    """

    number: int
    title: str
    message: list[Any]
    frame: bytes


def _document() -> str:
    return PROTOCOL_MD.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """
    The body of the level-2 section C{heading}, up to the next one.
    """
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise ValueError(f"no section {heading!r} in PROTOCOL.md")
    return match.group(1)


def loadVectors() -> list[Vector]:
    """
    Every vector of section "11. Test vectors", in order.
    """
    section = _section(_document(), "11. Test vectors")
    parts = re.split(r"^### V(\d+)\. (.+)$", section, flags=re.M)
    vectors = []
    # parts: [preamble, number, title, body, number, title, body, ...]
    for i in range(1, len(parts), 3):
        number, title, body = int(parts[i]), parts[i + 1], parts[i + 2]
        messages = re.findall(r"^message: (.+)$", body, re.M)
        frames = re.findall(r"^frame: ([0-9a-f ]+)$", body, re.M)
        if len(messages) != 1 or len(frames) != 1:
            raise ValueError(f"V{number} needs one message: and one frame: line")
        vectors.append(
            Vector(number, title, parseNotation(messages[0]), parseHex(frames[0]))
        )
    return vectors


def loadAnswers() -> list[tuple[list[Any], Vector]]:
    """
    The vectors whose text says which request they answer: C{(request,
    response vector)} pairs, the request given as a vector (C{"The answer
    to V1"}) or in the notation (C{"the answer to `[0, 14, ...]`"}).
    """
    section = _section(_document(), "11. Test vectors")
    vectors = {v.number: v for v in loadVectors()}
    parts = re.split(r"^### V(\d+)\. .+$", section, flags=re.M)
    pairs = []
    for i in range(1, len(parts), 2):
        number, body = int(parts[i]), parts[i + 1]
        match = re.search(r"answer to (?:V(\d+)|`(\[.+?\])`)", body)
        if match is None:
            continue
        if match.group(1):
            request = vectors[int(match.group(1))].message
        else:
            request = parseNotation(match.group(2))
        pairs.append((request, vectors[number]))
    return pairs


def loadSession() -> list[tuple[str, str]]:
    """
    The steps of the worked example: C{(who, what)} pairs where C{who} is
    C{"client"}, C{"server"} or C{"idle"}.
    """
    section = _section(_document(), "10. Worked example")
    match = re.search(r"^```session\n(.*?)^```$", section, re.M | re.S)
    if match is None:
        raise ValueError("no ```session block in the worked example")
    steps = []
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            who, _, what = line.partition(":")
            if who not in ("client", "server", "idle"):
                raise ValueError(f"unexpected session line {line!r}")
            steps.append((who, what.strip()))
    return steps
