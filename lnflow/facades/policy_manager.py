"""``PolicyManager``: the seed's policy engine API, over :mod:`lnflow.policy`.

The same code as ``lnflowd policy``: rules in charge-lnd's format plus lnflow's
criteria, the guard rails, every change recorded in the store and reversible.

    manager = PolicyManager(config_file="config/policies.conf", lnd_grpc_host="localhost:10009")
    plan = await manager.plan()              # read-only: nothing is sent or written
    report = await manager.apply()           # UpdateChannelPolicy; needs offchain:write
    await manager.rollback(report.outcomes[0].change_id)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lnflow.config import Settings, load_settings, plain
from lnflow.errors import LnflowError
from lnflow.lnd import LndClient
from lnflow.policy import runner
from lnflow.policy.engine import ApplyReport, Plan, apply_plan, rollback

__all__ = ["PolicyManager"]


class PolicyManager:
    """Plan, apply and roll back fee policies of one lnd node.

    ``config_file`` is the rules file (``policies.conf``). ``macaroon_path`` reads
    (plan); ``policy_macaroon_path`` must grant offchain:write (apply, rollback).
    ``lnd_manage_url`` is accepted for the seed's signature and not used. Other
    ``[policy]`` settings (guard rails) go in ``policy`` as keyword values.
    """

    def __init__(
        self,
        config_file: str | Path,
        lnd_grpc_host: str = "localhost:10009",
        lnd_manage_url: str | None = None,
        *,
        lnd_dir: str | Path = "~/.lnd",
        network: str = "mainnet",
        tls_cert_path: str | Path | None = None,
        macaroon_path: str | Path | None = None,
        policy_macaroon_path: str | Path | None = None,
        db_path: str | Path | None = None,
        **policy: Any,
    ) -> None:
        del lnd_manage_url  # the seed's; lnflow reads aliases from lnd
        self.settings: Settings = load_settings(
            None,
            {
                "lnd": {
                    "lnddir": str(lnd_dir),
                    "network": network,
                    "rpcserver": lnd_grpc_host,
                    "tlscertpath": None if tls_cert_path is None else str(tls_cert_path),
                    "macaroonpath": None if macaroon_path is None else str(macaroon_path),
                },
                "store": {"db": None if db_path is None else str(db_path)},
                "policy": {
                    "file": str(config_file),
                    "macaroonpath": (
                        None if policy_macaroon_path is None else str(policy_macaroon_path)
                    ),
                    **policy,
                },
            },
        )
        self._plain = plain(self.settings)  # what lnflow.policy.runner takes
        self.rules = runner.rules_of(self._plain)  # a bad file raises here, in one line

    def _reader(self) -> LndClient:
        return LndClient(
            runner.read_credentials(self._plain), timeout_s=self.settings.lnd.timeout_s
        )

    def _writer(self) -> LndClient:
        return LndClient(
            runner.policy_credentials(self._plain), timeout_s=self.settings.lnd.timeout_s
        )

    async def plan(self) -> Plan:
        """What the rules would change now, after the guard rails (nothing is written)."""
        async with self._reader() as lnd:
            return await runner.make_plan(self._plain, self.rules, lnd)

    async def apply(self, plan: Plan | None = None) -> ApplyReport:
        """Apply ``plan`` (default: a fresh one) and record every change."""
        if plan is None:
            plan = await self.plan()
        node_id = runner.node_id(self._plain, plan.node.info)
        with runner.open_history(self._plain) as db:
            async with self._writer() as lnd:
                lnd.version = plan.node.version
                return await apply_plan(plan, lnd, db, node_id)

    async def rollback(
        self, change_id: int | None = None, *, run_id: int | None = None
    ) -> ApplyReport:
        """Restore the recorded "before" values of one change or of a run's changes."""
        if (change_id is None) == (run_id is None):
            raise LnflowError("rollback takes a change id or run_id=, not both or neither")
        with runner.open_history(self._plain) as db:
            async with self._writer() as lnd:
                await lnd.get_version()
                return await rollback(
                    lnd,
                    db,
                    change_ids=() if change_id is None else (change_id,),
                    run_id=run_id,
                )
