"""Fault suite: each module reproduces one class of fault against the real daemon and the
simulated node (disk full, store tampering, a frozen or vanished node, hostile values) and
asserts what lnflow promises in docs/reliability.md, with counts."""
