"""``AsyncLNDgRPCClient``: the seed's name for the typed lnd client.

A thin subclass of :class:`lnflow.lnd.LndClient` whose constructor takes the
seed's keyword names and fills in lncli's defaults; every RPC method is
LndClient's (domain records in and out, :class:`~lnflow.errors.LndError` on
failure).

    async with AsyncLNDgRPCClient(lnd_dir="~/.lnd") as lnd:
        info = await lnd.get_info()
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from lnflow.lnd import LndClient, LndCredentials
from lnflow.lnd.credentials import DEFAULT_LNDDIR, DEFAULT_NETWORK, DEFAULT_RPCSERVER

__all__ = ["AsyncLNDgRPCClient"]


class AsyncLNDgRPCClient(LndClient):
    """lnd over gRPC (TLS + macaroon), configured the way the seed's examples do.

    ``macaroon_path`` defaults to ``<lnd_dir>/data/chain/bitcoin/<network>/``
    readonly.macaroon (then admin.macaroon, charge-lnd.macaroon);
    ``tls_cert_path`` to ``<lnd_dir>/tls.cert``. Files are read on entering the
    context, so a missing one raises there.
    """

    def __init__(
        self,
        lnd_dir: str | Path = DEFAULT_LNDDIR,
        server: str = DEFAULT_RPCSERVER,
        network: str = DEFAULT_NETWORK,
        macaroon_path: str | Path | None = None,
        tls_cert_path: str | Path | None = None,
        *,
        timeout_s: float = 15.0,
    ) -> None:
        credentials = LndCredentials.resolve(
            lnddir=lnd_dir,
            network=network,
            rpcserver=server,
            tlscertpath=tls_cert_path,
            macaroonpath=macaroon_path,
        )
        super().__init__(credentials, timeout_s=timeout_s)

    async def __aenter__(self) -> AsyncLNDgRPCClient:
        await super().__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
