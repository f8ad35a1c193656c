"""Text from the network made safe to print: node and peer aliases, failure strings, errors.

An alias is whatever a peer put in its node announcement, so it can hold terminal
control sequences (clear the screen, set the window title, recolour everything after
it), newlines that forge table rows, or bidi overrides that reorder what a line shows.
:func:`printable` turns every such character into visible text:

- C0 controls (U+0000–U+001F, tab and newline included), DEL (U+007F) and C1 controls
  (U+0080–U+009F) become ``\\xNN``;
- bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069, U+061C, U+200E,
  U+200F) and the line and paragraph separators (U+2028, U+2029) become ``\\uNNNN``.

Everything else is kept, so an alias in any script reads as it was meant. Escape first,
then cut to a width: a cut cannot leave a sequence open, as there is none left.
JSON output stays exact (``json.dumps`` escapes controls itself); CSV cells get
:func:`printable` plus a guard against spreadsheet formulas (lnflow.store.export).
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, bidi override and line separator shown as an escape."""
    # every character escaped here is one str.isprintable() rejects (Cc, Cf, Zl, Zp):
    # printable text, nearly all of it (numbers, amounts, most aliases), is returned as is
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escape, text)
