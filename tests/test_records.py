"""``slot_init``: the analysis' per-channel records built through their slots are the same
records their dataclass ``__init__`` builds."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from lnflow.analysis.model import ChannelState, Opportunity, slot_init


@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    a: int
    b: str
    c: int | None = None
    d: tuple[int, ...] = ()


@slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Slotted:
    a: int
    b: str
    c: int | None = None
    d: tuple[int, ...] = ()


def _params(cls: type) -> list[tuple[str, object, object]]:
    """Each parameter's name, default and kind (the annotations are not kept)."""
    return [(p.name, p.default, p.kind) for p in inspect.signature(cls).parameters.values()]


def _fields(record: object) -> tuple[object, ...]:
    return tuple(getattr(record, f.name) for f in dataclasses.fields(record))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1, "x"), {}), ((1,), {"b": "y", "d": (2, 3)}), ((), {"a": 0, "b": "", "c": 5})],
)
def test_same_fields_defaults_and_signature(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    plain, slotted = _Plain(*args, **kwargs), _Slotted(*args, **kwargs)  # type: ignore[arg-type]
    assert _fields(slotted) == _fields(plain)
    assert repr(slotted) == repr(plain).replace("_Plain", "_Slotted")
    assert slotted == _Slotted(*args, **kwargs)  # type: ignore[arg-type]
    assert hash(slotted) == hash(_Slotted(*args, **kwargs))  # type: ignore[arg-type]
    assert _params(_Slotted) == _params(_Plain)


def test_still_frozen_and_replaceable() -> None:
    record = _Slotted(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.a = 2  # type: ignore[misc]
    assert dataclasses.replace(record, c=7) == _Slotted(1, "x", 7)


def test_wrong_arguments_raise_as_before() -> None:
    with pytest.raises(TypeError):
        _Slotted(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Slotted(1, "x", e=3)  # type: ignore[call-arg]


def test_refuses_what_it_cannot_build() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Factory, Post):
        with pytest.raises(TypeError):
            slot_init(cls)


def test_the_analysis_records_use_it() -> None:
    for cls in (ChannelState, Opportunity):
        assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
        assert "_set_" in " ".join(cls.__init__.__code__.co_names)
