"""The policies file: charge-lnd's rule language, read into frozen records.

The format is charge-lnd's (``configparser`` with extended interpolation, ``${sec:key}``):

* one ``[section]`` per policy, kept in file order; keys are lower-cased;
* list values split on commas (and on line breaks of a continued value); an item
  ``file://PATH`` is replaced by the ids in that file, one or more a line, ``#`` comments;
* integers may group digits with underscores (``1_000_000``); ratios are decimals 0..1;
* ``[default]`` (lower case) is the fallback: a strategy and properties, no criteria.

Every key is checked when the file is loaded. A key lnflow cannot honour (``onchain.*``,
the ``cost`` and ``onchain_fee`` strategies and their keys, circuitbreaker ``cb_*`` keys, a
misspelt key, a criterion that would be ignored) is refused with one line naming the file,
the line, the section and the key: a rule is never silently dropped.

Relative paths (``file://`` lists, ``use_config``'s ``config_file``) are read relative to
the directory of the file that names them. Files named by ``config_file`` are loaded with
the file that names them (a file that includes itself, directly or not, is refused), so
evaluation reads nothing.
"""

from __future__ import annotations

import configparser
import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from lnflow.analysis.model import Action
from lnflow.domain import FailureClass, parse_scid
from lnflow.errors import PolicyFileError

__all__ = [
    "CRITERIA",
    "DEFAULT_SECTION",
    "PROPERTIES",
    "Criterion",
    "CriterionValue",
    "Properties",
    "Rules",
    "Section",
    "Strategy",
    "load_rules",
    "parse_rules",
]

DEFAULT_SECTION = "default"


class Strategy(enum.StrEnum):
    """How a final section computes the channel's new policy (docs/policy.md)."""

    IGNORE = "ignore"
    IGNORE_FEES = "ignore_fees"
    STATIC = "static"
    MATCH_PEER = "match_peer"
    PROPORTIONAL = "proportional"
    DISABLE = "disable"
    USE_CONFIG = "use_config"
    OPPORTUNITY = "opportunity"  # lnflow's own: apply the latest snapshot's suggestion


# ints (counts, sats, seconds), Fractions (ratios), bools, and frozensets of channel ids,
# pubkeys, Actions or FailureClasses (StrEnum and IntEnum members)
CriterionValue = int | Fraction | bool | frozenset[int] | frozenset[str]


class _Kind(enum.Enum):
    COUNT = "a whole number ≥ 0"
    INT = "a whole number"
    POSITIVE = "a whole number ≥ 1"
    RATIO = "a decimal from 0 to 1"
    POSITIVE_RATIO = "a decimal above 0 and at most 1"
    PERCENT = "a whole number from 1 to 100"
    BOOL = "true or false"
    PERIOD = "a period: seconds, or a number with s, m, h or d"
    CHAN_IDS = "channel ids (decimal, BLOCKxTXxOUTPUT or B:T:O) or file:// lists"
    NODE_IDS = "node pubkeys (66 hex digits) or file:// lists"
    ACTIONS = "recommendations: " + ", ".join(a.value for a in Action)
    CLASSES = "failure classes: " + ", ".join(c.label for c in FailureClass)
    STRATEGY = "a strategy: " + ", ".join(s.value for s in Strategy)
    PATH = "a file path"


# min_/max_ pairs of charge-lnd's criteria; the figure each compares is in evaluate.py
_CHAN_RANGES: dict[str, _Kind] = {
    "capacity": _Kind.COUNT,
    "age": _Kind.COUNT,
    "ratio": _Kind.RATIO,
    "local_balance": _Kind.COUNT,
    "remote_balance": _Kind.COUNT,
    "base_fee_msat": _Kind.COUNT,
    "fee_ppm": _Kind.COUNT,
    "htlcs_in": _Kind.COUNT,
    "htlcs_out": _Kind.COUNT,
    "sats_in": _Kind.COUNT,
    "sats_out": _Kind.COUNT,
    "htlcs_ratio": _Kind.RATIO,
    "sats_ratio": _Kind.RATIO,
    "count_pending_htlcs": _Kind.COUNT,
    "next_pending_htlc_expiry": _Kind.INT,
}
_NODE_RANGES: dict[str, _Kind] = {
    "channels": _Kind.COUNT,
    "capacity": _Kind.COUNT,
    "shared_channels_active": _Kind.COUNT,
    "shared_channels_inactive": _Kind.COUNT,
    "shared_capacity_active": _Kind.COUNT,
    "shared_capacity_inactive": _Kind.COUNT,
    "shared_ratio": _Kind.RATIO,
    "shared_ratio_active": _Kind.RATIO,
    "shared_ratio_inactive": _Kind.RATIO,
}

CRITERIA: Mapping[str, _Kind] = MappingProxyType(
    {
        "chan.id": _Kind.CHAN_IDS,
        "chan.initiator": _Kind.BOOL,
        "chan.private": _Kind.BOOL,
        "chan.disabled": _Kind.BOOL,
        "chan.activity_period": _Kind.PERIOD,
        "chan.activity_period_ignore_channel_age": _Kind.BOOL,
        **{f"chan.{b}_{n}": k for n, k in _CHAN_RANGES.items() for b in ("min", "max")},
        "node.id": _Kind.NODE_IDS,
        **{f"node.{b}_{n}": k for n, k in _NODE_RANGES.items() for b in ("min", "max")},
        "lnflow.recommendation": _Kind.ACTIONS,
        "lnflow.dominant_class": _Kind.CLASSES,
        "lnflow.min_urgency": _Kind.COUNT,
        "lnflow.min_missed_sats": _Kind.COUNT,
        "lnflow.min_failures": _Kind.COUNT,
        "lnflow.min_fees_earned_sats": _Kind.COUNT,
        "lnflow.max_fees_earned_sats": _Kind.COUNT,
        "lnflow.min_forwards": _Kind.COUNT,
        "lnflow.max_forwards": _Kind.COUNT,
        "lnflow.window_hours": _Kind.POSITIVE,
    }
)

# criteria that only mean something over chan.activity_period
_ACTIVITY_KEYS = frozenset(
    {"chan.activity_period_ignore_channel_age"}
    | {
        f"chan.{b}_{n}"
        for n in ("htlcs_in", "htlcs_out", "sats_in", "sats_out", "htlcs_ratio", "sats_ratio")
        for b in ("min", "max")
    }
)
# criteria over lnflow.window_hours
_WINDOW_KEYS = frozenset(
    f"lnflow.{b}_{n}" for n in ("fees_earned_sats", "forwards") for b in ("min", "max")
)

PROPERTIES: Mapping[str, _Kind] = MappingProxyType(
    {
        "strategy": _Kind.STRATEGY,
        "base_fee_msat": _Kind.COUNT,
        "fee_ppm": _Kind.COUNT,
        "min_fee_ppm": _Kind.COUNT,
        "max_fee_ppm": _Kind.COUNT,
        "min_htlc_msat": _Kind.COUNT,
        "max_htlc_msat": _Kind.POSITIVE,  # lnd reads 0 as "unchanged"
        "max_htlc_msat_ratio": _Kind.POSITIVE_RATIO,
        "time_lock_delta": _Kind.POSITIVE,
        "min_fee_ppm_delta": _Kind.COUNT,
        "min_inbound_fee_ppm_delta": _Kind.COUNT,
        "inbound_fee_ppm": _Kind.INT,
        "inbound_base_fee_msat": _Kind.INT,
        "inbound_level_ppm": _Kind.INT,
        "sum_peer_chans": _Kind.BOOL,
        "config_file": _Kind.PATH,
        "max_fee_step_percent": _Kind.PERCENT,
    }
)

_NOT_SUPPORTED = {
    "cost_factor": "the cost strategy is not supported (lnflow reads no on-chain transactions)",
    "onchain_fee_btc": "the onchain_fee strategy is not supported (no on-chain estimates)",
    "onchain_fee_numblocks": "the onchain_fee strategy is not supported (no on-chain estimates)",
}
_STRATEGY_NOT_SUPPORTED = {
    "cost": "strategy cost is not supported (lnflow reads no on-chain transactions)",
    "onchain_fee": "strategy onchain_fee is not supported (lnflow reads no on-chain fee estimates)",
}
_NAMESPACES = ("chan", "node", "lnflow")

_INT = re.compile(r"^[+-]?\d+(?:_\d+)*$")
_PERIOD = re.compile(r"^(\d+(?:_\d+)*)([smhd]?)$")
_PERIOD_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400}
_PUBKEY = re.compile(r"^[0-9a-f]{66}$")
_BOOLS = configparser.ConfigParser.BOOLEAN_STATES

_T = TypeVar("_T", int, str)
_Refuse = Callable[[str], PolicyFileError]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Criterion:
    """One ``chan.*``, ``node.*`` or ``lnflow.*`` key of a section, its value parsed."""

    key: str
    value: CriterionValue
    line: int


@dataclass(frozen=True, slots=True)
class Properties:
    """A section's non-criterion keys; None: not set here.

    Non-final sections lay their properties over later ones (:meth:`over`).
    """

    strategy: Strategy | None = None
    base_fee_msat: int | None = None
    fee_ppm: int | None = None
    min_fee_ppm: int | None = None
    max_fee_ppm: int | None = None
    min_htlc_msat: int | None = None
    max_htlc_msat: int | None = None
    max_htlc_msat_ratio: Fraction | None = None
    time_lock_delta: int | None = None
    min_fee_ppm_delta: int | None = None
    min_inbound_fee_ppm_delta: int | None = None
    inbound_fee_ppm: int | None = None
    inbound_base_fee_msat: int | None = None
    inbound_level_ppm: int | None = None
    sum_peer_chans: bool | None = None
    config_file: str | None = None
    max_fee_step_percent: int | None = None

    def over(self, below: Properties) -> Properties:
        """These properties laid over ``below``: every value set here wins."""
        changes = {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }
        return replace(below, **changes)


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    line: int
    criteria: tuple[Criterion, ...]
    properties: Properties

    @property
    def strategy(self) -> Strategy | None:
        return self.properties.strategy

    @property
    def final(self) -> bool:
        """A section with a strategy ends the search when it matches."""
        return self.properties.strategy is not None

    def get(self, key: str) -> CriterionValue | None:
        for criterion in self.criteria:
            if criterion.key == key:
                return criterion.value
        return None

    def has(self, key: str) -> bool:
        return any(c.key == key for c in self.criteria)


@dataclass(frozen=True, slots=True)
class Rules:
    """A loaded policies file: its sections top to bottom, ``[default]`` apart."""

    source: str
    sections: tuple[Section, ...]
    default: Section | None
    # config_file value (as written) -> the rules it names, for use_config
    includes: Mapping[str, Rules]

    def all_rules(self) -> Iterator[Rules]:
        """These rules and every file they include, each once."""
        seen: set[int] = set()
        stack: list[Rules] = [self]
        while stack:
            rules = stack.pop()
            if id(rules) in seen:
                continue
            seen.add(id(rules))
            yield rules
            stack.extend(rules.includes.values())

    def activity_periods_s(self, analysis_window_s: int) -> frozenset[int]:
        """The periods (seconds) whose forwarding activity evaluation needs per channel.

        ``chan.activity_period`` values, and ``lnflow.window_hours`` (the analysis window
        when a section has window criteria without it): fetch these, then evaluate.
        """
        periods: set[int] = set()
        for rules in self.all_rules():
            for section in (*rules.sections, *([rules.default] if rules.default else [])):
                period = section.get("chan.activity_period")
                if isinstance(period, int):
                    periods.add(period)
                if any(section.has(k) for k in _WINDOW_KEYS):
                    periods.add(window_s(section, analysis_window_s))
        return frozenset(periods)


def window_s(section: Section, analysis_window_s: int) -> int:
    """The period of a section's ``lnflow.`` fees/forwards criteria, in seconds."""
    hours = section.get("lnflow.window_hours")
    return hours * 3_600 if isinstance(hours, int) else analysis_window_s


# --------------------------------------------------------------------------- loading


def load_rules(path: str | Path) -> Rules:
    """Read and check a policies file (and the files it names)."""
    return _load(Path(path), ())


def parse_rules(text: str, *, source: str = "<policies>", base_dir: str | Path = ".") -> Rules:
    """Parse policies text; relative ``file://`` and ``config_file`` paths from ``base_dir``."""
    return _parse(text, source, Path(base_dir), ())


def _load(path: Path, stack: tuple[Path, ...]) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read the policies file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyFileError(f"{path}: not a UTF-8 text file") from exc
    return _parse(text, str(path), path.parent, (*stack, path.resolve()))


class _Where:
    """Formats the one-line refusals: ``FILE:LINE: [section] key: problem``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, line: int, problem: str, section: str = "", key: str = "") -> PolicyFileError:
        where = f"{self.source}:{line}:"
        if section:
            where += f" [{section}]"
        if key:
            where += f" {key}:"
        elif section:
            where += ":"
        return PolicyFileError(f"{where} {problem}")


def _scan_lines(text: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Line numbers of section headers and keys, read as configparser reads the file.

    configparser keeps no line numbers; this mirrors its rules (full-line ``#``/``;``
    comments, indented lines continue a value, ``key = value`` or ``key: value``).
    """
    sections: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    current: str | None = None
    key_indent: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        indent = len(raw) - len(raw.lstrip())
        if key_indent is not None and indent > key_indent:
            continue  # continuation of the previous value
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
            sections.setdefault(current, number)
            key_indent = None
            continue
        if current is None:
            continue
        match = re.match(r"(?P<key>.*?)\s*[=:]", stripped)
        if match:
            keys.setdefault((current, match.group("key").strip().lower()), number)
            key_indent = indent
    return sections, keys


def _parse(text: str, source: str, base_dir: Path, stack: tuple[Path, ...]) -> Rules:
    where = _Where(source)
    parser = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
    try:
        parser.read_string(text, source=source)
    except configparser.DuplicateSectionError as exc:
        raise where.error(exc.lineno or 0, "section appears twice", exc.section) from exc
    except configparser.DuplicateOptionError as exc:
        raise where.error(
            exc.lineno or 0, "key appears twice in the section", exc.section, exc.option
        ) from exc
    except configparser.MissingSectionHeaderError as exc:
        raise where.error(exc.lineno, "a key before the first [section]") from exc
    except configparser.ParsingError as exc:
        line = exc.errors[0][0]
        content = text.splitlines()[line - 1].strip() if 0 < line <= len(text.splitlines()) else ""
        raise where.error(line, f"not a 'key = value' line: {content}") from exc

    section_lines, key_lines = _scan_lines(text)
    if parser.defaults() or configparser.DEFAULTSECT in section_lines:
        raise where.error(
            section_lines.get(configparser.DEFAULTSECT, 0),
            "[DEFAULT] would add its keys to every section; use [default] for the fallback"
            " policy, or a section without strategy at the top for shared properties",
        )

    sections: list[Section] = []
    default: Section | None = None
    for name in parser.sections():
        section = _section(parser, name, section_lines.get(name, 0), key_lines, where, base_dir)
        if name == DEFAULT_SECTION:
            default = section
        else:
            sections.append(section)

    includes: dict[str, Rules] = {}
    for section in (*sections, *([default] if default else [])):
        config_file = section.properties.config_file
        if config_file is None or config_file in includes:
            continue
        line = key_lines.get((section.name, "config_file"), section.line)
        path = Path(config_file.removeprefix("file://"))
        if not path.is_absolute():
            path = base_dir / path
        if path.resolve() in stack:
            chain = " -> ".join(str(p) for p in (*stack, path.resolve()))
            raise where.error(line, f"use_config loops: {chain}", section.name, "config_file")
        try:
            includes[config_file] = _load(path, stack)
        except PolicyFileError as exc:
            if not path.exists():
                raise where.error(
                    line, f"no such policies file: {path}", section.name, "config_file"
                ) from exc
            raise
    return Rules(
        source=source,
        sections=tuple(sections),
        default=default,
        includes=MappingProxyType(includes),
    )


def _section(
    parser: configparser.ConfigParser,
    name: str,
    line: int,
    key_lines: Mapping[tuple[str, str], int],
    where: _Where,
    base_dir: Path,
) -> Section:
    criteria: list[Criterion] = []
    props: dict[str, object] = {}
    for key in parser[name]:
        key_line = key_lines.get((name, key), line)

        def refuse(problem: str, *, _line: int = key_line, _key: str = key) -> PolicyFileError:
            return where.error(_line, problem, name, _key)

        try:
            raw = parser[name][key]
        except configparser.InterpolationError as exc:
            written = parser.get(name, key, raw=True).strip()
            raise refuse(f"'{written}': the ${{...}} reference does not resolve") from exc
        if "." in key:
            namespace = key.split(".", 1)[0]
            if namespace == "onchain":
                raise refuse("onchain.* criteria are not supported (no on-chain fee estimates)")
            if namespace not in _NAMESPACES:
                raise refuse(f"unknown namespace '{namespace}' (known: chan, node, lnflow)")
            kind = CRITERIA.get(key)
            if kind is None:
                raise refuse(f"unknown {namespace}.* criterion")
            value = _value(kind, raw, refuse, base_dir)
            assert not isinstance(value, Strategy | str)
            criteria.append(Criterion(key, value, key_line))
            continue
        if key in _NOT_SUPPORTED:
            raise refuse(_NOT_SUPPORTED[key])
        if key.startswith("cb_"):
            raise refuse("circuitbreaker limits (cb_*) are not supported")
        kind = PROPERTIES.get(key)
        if kind is None:
            raise refuse("unknown key (not a chan.*/node.*/lnflow.* criterion nor a property)")
        if kind is _Kind.STRATEGY and raw.strip() in _STRATEGY_NOT_SUPPORTED:
            raise refuse(_STRATEGY_NOT_SUPPORTED[raw.strip()])
        props[key] = _value(kind, raw, refuse, base_dir)

    properties = Properties(**props)  # type: ignore[arg-type]  # kinds checked by _value
    keys = {c.key for c in criteria}

    def refuse_key(key: str, problem: str) -> PolicyFileError:
        return where.error(key_lines.get((name, key), line), problem, name, key)

    for key in sorted(keys & _ACTIVITY_KEYS):
        if "chan.activity_period" not in keys:
            raise refuse_key(key, "needs chan.activity_period in the same section")
    if "lnflow.window_hours" in keys and not keys & _WINDOW_KEYS:
        raise refuse_key(
            "lnflow.window_hours", "needs lnflow.min/max_fees_earned_sats or min/max_forwards"
        )
    if (
        properties.min_fee_ppm is not None
        and properties.max_fee_ppm is not None
        and properties.min_fee_ppm > properties.max_fee_ppm
    ):
        raise refuse_key(
            "max_fee_ppm",
            f"below min_fee_ppm ({properties.max_fee_ppm} < {properties.min_fee_ppm})",
        )
    if name == DEFAULT_SECTION:
        if criteria:
            raise refuse_key(
                criteria[0].key, "[default] applies when nothing matched: it takes no criteria"
            )
        if properties.strategy is None:
            raise where.error(line, "[default] needs a strategy", name)
    return Section(name=name, line=line, criteria=tuple(criteria), properties=properties)


def _items(raw: str) -> list[str]:
    """A list value: comma- and line-separated items, blanks dropped."""
    return [item.strip() for item in re.split(r"[,\n]", raw) if item.strip()]


def _value(
    kind: _Kind, raw: str, refuse: _Refuse, base_dir: Path
) -> CriterionValue | Strategy | str | Fraction:
    text = raw.strip()
    wrong = refuse(f"'{text}' is not {kind.value}")
    if kind in (_Kind.COUNT, _Kind.INT, _Kind.POSITIVE, _Kind.PERCENT):
        if not _INT.match(text):
            raise wrong
        number = int(text)
        if (
            (kind is _Kind.COUNT and number < 0)
            or (kind is _Kind.POSITIVE and number < 1)
            or (kind is _Kind.PERCENT and not 1 <= number <= 100)
        ):
            raise wrong
        return number
    if kind in (_Kind.RATIO, _Kind.POSITIVE_RATIO):
        try:
            ratio = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise wrong from None
        if not 0 <= ratio <= 1 or (kind is _Kind.POSITIVE_RATIO and ratio == 0):
            raise wrong
        return ratio
    if kind is _Kind.BOOL:
        if text.lower() not in _BOOLS:
            raise wrong
        return _BOOLS[text.lower()]
    if kind is _Kind.PERIOD:
        match = _PERIOD.match(text)
        if not match or int(match.group(1)) == 0:
            raise wrong
        return int(match.group(1)) * _PERIOD_S[match.group(2)]
    if kind is _Kind.STRATEGY:
        try:
            return Strategy(text)
        except ValueError:
            raise wrong from None
    if kind is _Kind.PATH:
        if not text:
            raise wrong
        return text
    if kind is _Kind.ACTIONS:
        try:
            return frozenset(Action(item.lower()) for item in _items(text))
        except ValueError:
            raise wrong from None
    if kind is _Kind.CLASSES:
        labels = {c.label: c for c in FailureClass}
        items = [item.lower() for item in _items(text)]
        if not items or any(item not in labels for item in items):
            raise wrong
        return frozenset(labels[item] for item in items)
    if kind is _Kind.CHAN_IDS:
        return frozenset(_ids(text, _chan_id, refuse, base_dir))
    return frozenset(_ids(text, _pubkey, refuse, base_dir))


def _chan_id(text: str) -> int:
    return parse_scid(text)


def _pubkey(text: str) -> str:
    key = text.lower()
    if not _PUBKEY.match(key):
        raise ValueError(f"'{text}' is not a node pubkey (66 hex digits)")
    return key


def _ids(text: str, parse: Callable[[str], _T], refuse: _Refuse, base_dir: Path) -> Iterator[_T]:
    items = _items(text)
    if not items:
        raise refuse("empty list")
    for item in items:
        if not item.startswith("file://"):
            try:
                yield parse(item)
            except ValueError as exc:
                raise refuse(str(exc)) from None
            continue
        path = Path(item.removeprefix("file://"))
        if not path.is_absolute():
            path = base_dir / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise refuse(f"cannot read id list {path}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            for entry in line.split("#", 1)[0].split(","):
                if entry.strip():
                    try:
                        yield parse(entry.strip())
                    except ValueError as exc:
                        raise refuse(f"{path}:{number}: {exc}") from None
