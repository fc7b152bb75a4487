"""Tokenizer: source text to a list of tokens (identifiers, numbers, strings with CEL escapes,
punctuation)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from pgqueue.expressions import faults, limits


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, reserved, int, uint, double, string, literal, eof, or the punctuation itself
    value: Any
    pos: int


_SPACE: Final = frozenset(" \t\n\r\f")
DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_IDENT_START: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_PART: Final = _IDENT_START | DIGITS
_PUNCT2: Final = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_PUNCT1: Final = frozenset("()[]{}.,:?!-+*/%<>")
_CONSTANTS: Final[dict[str, Any]] = {"true": True, "false": False, "null": None}
_RESERVED: Final = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
     "package", "namespace", "return", "var", "void", "while"}
)  # fmt: skip
_CONSTANT_TEXT: Final = {value: word for word, value in _CONSTANTS.items()}
_SIMPLE_ESCAPES: Final = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}  # fmt: skip


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    n = len(source)
    i = 0
    while i < n:
        c = source[i]
        if c in _SPACE:
            i += 1
        elif c == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in _IDENT_START:
            j = i + 1
            while j < n and source[j] in _IDENT_PART:
                j += 1
            word = source[i:j]
            if j < n and source[j] in "'\"" and word.lower() in ("r", "b", "rb", "br"):
                if "b" in word.lower():
                    raise faults.syntax_error(source, i, "bytes literals are not supported")
                value, j = _scan_string(source, j, raw=True)
                tokens.append(Token("string", value, i))
            elif word in _CONSTANTS:
                tokens.append(Token("literal", _CONSTANTS[word], i))
            elif word == "in":
                tokens.append(Token("in", None, i))
            else:
                tokens.append(Token("reserved" if word in _RESERVED else "ident", word, i))
            i = j
        elif c in DIGITS or (c == "." and i + 1 < n and source[i + 1] in DIGITS):
            token, i = _scan_number(source, i)
            tokens.append(token)
        elif c == "'" or c == '"':
            value, j = _scan_string(source, i, raw=False)
            tokens.append(Token("string", value, i))
            i = j
        elif source[i : i + 2] in _PUNCT2:
            tokens.append(Token(source[i : i + 2], None, i))
            i += 2
        elif c in _PUNCT1:
            tokens.append(Token(c, None, i))
            i += 1
        elif c == "=":
            raise faults.syntax_error(source, i, "unexpected `=`; compare with `==`")
        else:
            raise faults.syntax_error(source, i, f"unexpected character {c!r}")
    tokens.append(Token("eof", None, n))
    return tokens


def _scan_number(source: str, start: int) -> tuple[Token, int]:
    n = len(source)
    if source.startswith(("0x", "0X"), start):
        j = start + 2
        while j < n and source[j] in _HEX:
            j += 1
        if j == start + 2:
            raise faults.syntax_error(source, start, "a hexadecimal literal needs digits after 0x")
        if j - start > 20:
            raise faults.syntax_error(source, start, "integer literal is out of range")
        value = int(source[start + 2 : j], 16)
    else:
        j = start
        while j < n and source[j] in DIGITS:
            j += 1
        is_double = False
        if j + 1 < n and source[j] == "." and source[j + 1] in DIGITS:
            is_double = True
            j += 1
            while j < n and source[j] in DIGITS:
                j += 1
        if j < n and source[j] in "eE":
            k = j + 1
            if k < n and source[k] in "+-":
                k += 1
            if k < n and source[k] in DIGITS:
                is_double = True
                j = k
                while j < n and source[j] in DIGITS:
                    j += 1
        text = source[start:j]
        if is_double:
            number = float(text)
            if math.isinf(number):
                raise faults.syntax_error(source, start, "number is too large for a double")
            return Token("double", number, start), j
        if len(text.lstrip("0")) > 20:
            raise faults.syntax_error(source, start, "integer literal is out of range")
        value = int(text)
    if j < n and source[j] in "uU":
        if value > limits.UINT64_MAX:
            raise faults.syntax_error(source, start, "unsigned integer literal is out of range")
        return Token("uint", value, start), j + 1
    return Token("int", value, start), j


def _scan_string(source: str, start: int, *, raw: bool) -> tuple[str, int]:
    n = len(source)
    quote = source[start]
    triple = source.startswith(quote * 3, start)
    i = start + (3 if triple else 1)
    out: list[str] = []
    while True:
        if i >= n:
            raise faults.syntax_error(source, start, "unterminated string literal")
        c = source[i]
        if c == quote and (not triple or source.startswith(quote * 3, i)):
            return "".join(out), i + (3 if triple else 1)
        if c in "\r\n" and not triple:
            raise faults.syntax_error(source, i, "line break inside a string; use a triple-quoted string")
        if c != "\\" or raw:
            out.append(c)
            i += 1
            continue
        escape = source[i + 1] if i + 1 < n else ""
        if escape in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[escape])
            i += 2
            continue
        width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(escape)
        if width is not None:
            digits = source[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in _HEX for d in digits):
                raise faults.syntax_error(source, i, f"\\{escape} needs {width} hexadecimal digits")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise faults.syntax_error(source, i, "escape is beyond the last Unicode code point")
            out.append(chr(code))
            i += 2 + width
            continue
        digits = source[i + 1 : i + 4]
        if len(digits) == 3 and digits[0] in "0123" and all(d in "01234567" for d in digits):
            out.append(chr(int(digits, 8)))
            i += 4
            continue
        raise faults.syntax_error(source, i, f"invalid escape sequence \\{escape}")


def describe(token: Token) -> str:
    if token.kind == "eof":
        return "end of input"
    if token.kind in ("ident", "reserved"):
        return f"`{token.value}`"
    if token.kind in ("int", "uint", "double"):
        return "a number"
    if token.kind == "string":
        return "a string"
    if token.kind == "literal":
        return f"`{_CONSTANT_TEXT[token.value]}`"
    return f"`{token.kind}`"
