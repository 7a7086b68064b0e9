"""lm-eval ``--model_args`` strings, parsed the same way on every lm-eval release.

lm-eval's own parser changed between releases (0.4.13 keeps brackets and quotes whole; 0.5.0.dev1
splits on every comma again), and cue lists contain commas, so relaygen parses the string itself:
one JSON object, or ``key=value`` pairs split on the commas outside brackets and quotes, each value
read as a Python literal (numbers, lists, quoted strings, True/False/None; ``true``/``false`` too)
or else kept as text.
"""

from __future__ import annotations

import ast
import json

from ..errors import ConfigError


def parse_model_args(text: str | None) -> dict:
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            args = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--model_args looks like JSON but does not parse: {e}") from None
        return args
    out = {}
    for item in _top_level_items(text):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model_args: expected key=value, got {item.strip()!r}")
        out[key.strip()] = _value(value.strip())
    return out


def _top_level_items(text: str) -> list[str]:
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ConfigError(f"--model_args: unbalanced quotes or brackets in {text!r}")
    return items + [text[start:]]


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
