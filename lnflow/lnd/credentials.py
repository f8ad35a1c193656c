"""Where lnd's TLS certificate and macaroon live, resolved the way ``lncli`` does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lnflow.errors import (
    CertificateMissingError,
    ConfigError,
    MacaroonMissingError,
    TlsMismatchError,
)
from lnflow.netaddr import rpc_address

__all__ = ["DEFAULT_LNDDIR", "DEFAULT_NETWORK", "DEFAULT_RPCSERVER", "NETWORKS", "LndCredentials"]

DEFAULT_LNDDIR = "~/.lnd"
DEFAULT_NETWORK = "mainnet"
DEFAULT_RPCSERVER = "localhost:10009"
NETWORKS = ("mainnet", "testnet", "testnet4", "signet", "regtest", "simnet")

# Tried in this order when no --macaroonpath is given: the least privileged first.
MACAROON_NAMES = ("readonly.macaroon", "admin.macaroon", "charge-lnd.macaroon")

_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"


def _path(value: str | Path) -> Path:
    return Path(value).expanduser()


def _with_port(rpcserver: str) -> str:
    """Append lnd's gRPC port to a bare host name or IPv4 address; refuse a bad port."""
    try:
        return rpc_address(rpcserver)
    except ValueError as exc:
        raise ConfigError(f"bad --rpcserver: {exc}") from None


class LndSection(Protocol):
    """lnflowd's ``[lnd]`` settings (:class:`lnflow.config.LndSettings`); "" = default."""

    @property
    def lnddir(self) -> str: ...
    @property
    def network(self) -> str: ...
    @property
    def rpcserver(self) -> str: ...
    @property
    def tlscertpath(self) -> str: ...
    @property
    def macaroonpath(self) -> str: ...


@dataclass(frozen=True)
class LndCredentials:
    """How to reach one lnd node: its gRPC address, TLS certificate and macaroon."""

    rpcserver: str
    tlscertpath: Path
    macaroonpath: Path
    network: str

    @classmethod
    def from_settings(cls, lnd: LndSection, macaroonpath: str | Path = "") -> LndCredentials:
        """From the ``[lnd]`` section; ``macaroonpath`` replaces its macaroon (the policy
        engine's, which may write)."""
        return cls.resolve(
            lnddir=lnd.lnddir,
            network=lnd.network,
            rpcserver=lnd.rpcserver,
            tlscertpath=lnd.tlscertpath or None,
            macaroonpath=macaroonpath or lnd.macaroonpath or None,
        )

    @classmethod
    def resolve(
        cls,
        *,
        lnddir: str | Path | None = None,
        network: str | None = None,
        rpcserver: str | None = None,
        tlscertpath: str | Path | None = None,
        macaroonpath: str | Path | None = None,
    ) -> LndCredentials:
        """Fill in lncli's defaults for every value not given (empty counts as not given).

        ``lnddir`` ~/.lnd, ``network`` mainnet, ``rpcserver`` localhost:10009,
        ``tlscertpath`` <lnddir>/tls.cert, ``macaroonpath``
        <lnddir>/data/chain/bitcoin/<network>/readonly.macaroon, or admin.macaroon /
        charge-lnd.macaroon from that folder when readonly.macaroon is absent.
        Only paths are computed; no file is read.
        """
        net = network or DEFAULT_NETWORK
        if net not in NETWORKS:
            raise ConfigError(f"unknown network '{net}': use one of {', '.join(NETWORKS)}")
        base = _path(lnddir or DEFAULT_LNDDIR)
        cert = _path(tlscertpath) if tlscertpath else base / "tls.cert"
        if macaroonpath:
            macaroon = _path(macaroonpath)
        else:
            folder = base / "data" / "chain" / "bitcoin" / net
            candidates = [folder / name for name in MACAROON_NAMES]
            # The first one is the default, reported as missing if none exists.
            macaroon = next((p for p in candidates if p.is_file()), candidates[0])
        return cls(
            rpcserver=_with_port(rpcserver or DEFAULT_RPCSERVER),
            tlscertpath=cert,
            macaroonpath=macaroon,
            network=net,
        )

    def load(self) -> tuple[bytes, str]:
        """Read the certificate (PEM bytes) and the macaroon (as hex, lnd's header form)."""
        return self._load_cert(), self._load_macaroon()

    def _load_cert(self) -> bytes:
        path = self.tlscertpath
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CertificateMissingError(
                f"TLS certificate not found at {path}: "
                "pass --tlscertpath or --lnddir pointing at lnd's directory"
            ) from None
        except OSError as exc:
            raise CertificateMissingError(
                f"cannot read TLS certificate {path} ({exc.strerror or exc}): "
                "check its permissions or pass --tlscertpath"
            ) from exc
        if _PEM_MARKER not in data:
            raise TlsMismatchError(
                f"{path} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----'): "
                "point --tlscertpath at lnd's tls.cert"
            )
        return data

    def _load_macaroon(self) -> str:
        path = self.macaroonpath
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MacaroonMissingError(
                f"macaroon not found at {path}: "
                f"pass --macaroonpath or set --network (now '{self.network}')"
            ) from None
        except OSError as exc:
            raise MacaroonMissingError(
                f"cannot read macaroon {path} ({exc.strerror or exc}): "
                "check its permissions or pass --macaroonpath"
            ) from exc
        if not data:
            raise MacaroonMissingError(
                f"macaroon {path} is empty: pass --macaroonpath with one of lnd's macaroons"
            )
        return data.hex()
