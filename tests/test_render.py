"""lnflowctl's text output helpers (lnflow.cli.render)."""

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from lnflow.cli.render import wrap


def _textwrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


@settings(max_examples=2000)
@given(
    st.text(alphabet="ab -é↳,.", max_size=120),
    st.integers(1, 40),
    st.text(alphabet=" x↳", max_size=12),
    st.text(alphabet=" y", max_size=12),
)
def test_wrap_is_textwrap(text: str, extra: int, first: str, rest: str) -> None:
    # words, runs of spaces at either end and between words, words longer than a line;
    # lines at least one character wider than the indents (narrower ones make textwrap
    # loop forever on some texts: wrap hands those to textwrap as they are)
    width = max(len(first), len(rest)) + extra
    assert wrap(text, width, first, rest) == _textwrap(text, width, first, rest)


@given(st.text(max_size=80), st.integers(5, 30))
def test_wrap_other_whitespace_is_textwrap(text: str, width: int) -> None:
    # tabs, newlines, non-breaking and other spaces: textwrap's own rules
    assert wrap(text, width, "  ↳ ", "    ") == _textwrap(text, width, "  ↳ ", "    ")


def test_wrap_a_reason() -> None:
    reason = (
        "83% of missed fees (1,234.567 sats) were liquidity failures; local balance "
        "123,456 of 2,000,000 sats; p90 failed amount 456,789.123 sats; move in 1,000,000 sats"
    )
    lines = wrap(reason, 60, "    ↳ ", "      ")
    assert lines == _textwrap(reason, 60, "    ↳ ", "      ")
    assert len(lines) == 3
    assert all(len(line) <= 60 for line in lines)
