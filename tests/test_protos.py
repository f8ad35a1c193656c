"""The committed generated modules must equal what `make protos` produces now."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "lnflow" / "lnd" / "_proto"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in written}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    extra = sorted(set(committed) - set(fresh))
    assert not stale, f"run `make protos`: stale {stale}"
    assert not extra, f"remove files no proto produces: {extra}"


def test_field_numbers_follow_lnd() -> None:
    from lnflow.lnd._proto import lightning_pb2, router_pb2

    ev = router_pb2.HtlcEvent.DESCRIPTOR.fields_by_name
    assert {n: ev[n].number for n in ("timestamp_ns", "link_fail_event", "final_htlc_event")} == {
        "timestamp_ns": 5,
        "link_fail_event": 10,
        "final_htlc_event": 12,
    }
    assert lightning_pb2.ListChannelsResponse.DESCRIPTOR.fields_by_name["channels"].number == 11
    fwd = lightning_pb2.ForwardingEvent.DESCRIPTOR.fields_by_name
    assert fwd["timestamp_ns"].number == 11 and fwd["outgoing_htlc_id"].has_presence
