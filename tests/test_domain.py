import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnflow.domain import format_scid, from_signed64, parse_scid, to_signed64


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_signed64_round_trip_stays_in_sqlite_range(value: int) -> None:
    signed = to_signed64(value)
    assert -(2**63) <= signed < 2**63
    assert from_signed64(signed) == value


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_signed64_rejects_non_uint64(bad: int) -> None:
    with pytest.raises(ValueError):
        to_signed64(bad)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("732759x1405x0", 805677040949592064),
        ("732759:1405:0", 805677040949592064),
        ("805677040949592064", 805677040949592064),
        ("16000000x0x1", (16_000_000 << 40) | 1),  # alias SCID, >= 2**63
    ],
    ids=["bxtxo", "colons", "decimal", "alias-range"],
)
def test_parse_scid(text: str, value: int) -> None:
    assert parse_scid(text) == value


@given(st.integers(0, 2**24 - 1), st.integers(0, 2**24 - 1), st.integers(0, 2**16 - 1))
def test_format_parse_round_trip(block: int, tx: int, out: int) -> None:
    scid = (block << 40) | (tx << 16) | out
    assert format_scid(scid) == f"{block}x{tx}x{out}"
    assert parse_scid(format_scid(scid)) == scid


@pytest.mark.parametrize("bad", ["", "abc", "1x2", "16777216x0x0", "1x2x65536", str(2**64)])
def test_parse_scid_rejects_with_a_message(bad: str) -> None:
    with pytest.raises(ValueError, match=r"channel id|out of range|64 bits"):
        parse_scid(bad)
