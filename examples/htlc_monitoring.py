"""Find missed routing opportunities from Python: the seed's programmatic example.

Monitors the node's HTLC events for a while, then prints the top opportunities.
The defaults are the seed's (lnd in ~/.lnd, one hour of monitoring); against
the simulated node of ``make demo``::

    .venv/bin/python examples/htlc_monitoring.py --lnd-dir demo/lnd --network regtest \\
        --grpc-host 127.0.0.1:PORT --seconds 20

``--seconds`` (or ``HTLC_MONITOR_SECONDS``) sets how long to monitor.
"""

import argparse
import asyncio
import os

from lnflow import AsyncLNDgRPCClient, HTLCMonitor, LndManageClient, OpportunityAnalyzer


async def find_opportunities(args: argparse.Namespace) -> None:
    # Setup clients
    async with AsyncLNDgRPCClient(  # noqa: SIM117  (nested as in the seed)
        lnd_dir=args.lnd_dir, server=args.grpc_host, network=args.network
    ) as grpc_client:
        async with LndManageClient(args.manage_url) as lnd_manage:
            # Create monitor
            monitor = HTLCMonitor(
                grpc_client=grpc_client, history_hours=24, min_failure_count=3, min_missed_sats=100
            )

            # Start monitoring
            await monitor.start_monitoring()

            # Let it run for a while
            await asyncio.sleep(args.seconds)  # 1 hour by default

            # Stop and analyze
            await monitor.stop_monitoring()

            # Analyze opportunities
            analyzer = OpportunityAnalyzer(monitor, lnd_manage)
            opportunities = await analyzer.analyze_opportunities()

            # Display top opportunities
            for opp in opportunities[:10]:
                print(f"{opp.channel_id}: {opp.recommended_action}")
                print(f"  Potential: {opp.potential_monthly_revenue_sats} sats/month")
                print(f"  Urgency: {opp.urgency_score}/100\n")
            print(f"{len(opportunities)} opportunities, {monitor.events_recorded} HTLC events seen")
            await monitor.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lnd-dir", default="~/.lnd", help="lnd's directory (default ~/.lnd)")
    p.add_argument("--grpc-host", default="localhost:10009", help="lnd gRPC host:port")
    p.add_argument("--network", default="mainnet", help="mainnet, testnet, signet, regtest")
    p.add_argument(
        "--manage-url", default="http://127.0.0.1:8081", help="lnd-manageJ (aliases only)"
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("HTLC_MONITOR_SECONDS", "3600")),
        help="how long to monitor (default 3600, or HTLC_MONITOR_SECONDS)",
    )
    asyncio.run(find_opportunities(p.parse_args()))


if __name__ == "__main__":
    main()
