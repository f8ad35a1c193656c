#!/usr/bin/env bash
# make demo: the daemon against the simulated node, then lnflowctl status and the
# opportunities table of a fresh analysis.
# Usage: tools/demo.sh BIN_DIR DEMO_DIR SECONDS
set -euo pipefail
BIN=$1 DEMO=$2 SECONDS_TO_RUN=$3
rm -rf "$DEMO"
mkdir -p "$DEMO"
SIM_PID= DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
  [ -n "$SIM_PID" ] && kill -TERM "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
}
trap cleanup EXIT

echo "starting the simulated node (regtest, 8 channels, seed 7) ..."
"$BIN/lnflow-sim" --lnddir "$DEMO/lnd" --port 0 --network regtest --channels 8 --seed 7 \
  --rate 40 --history 2000 >"$DEMO/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do [ -f "$DEMO/lnd/sim.json" ] && break; sleep 0.1; done
[ -f "$DEMO/lnd/sim.json" ] || { echo "the simulated node did not start:"; cat "$DEMO/sim.log"; exit 1; }
PORT=$("$BIN/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['port'])" "$DEMO/lnd/sim.json")

"$BIN/lnflowd" --lnddir "$DEMO/lnd" --network regtest --rpcserver "127.0.0.1:$PORT" --check
echo "starting lnflowd (logs in $DEMO/lnflowd.log), recording for $SECONDS_TO_RUN s ..."
# a short run: sync the forwards ledger every 10 s instead of every minute
LNFLOW_LEDGER__SYNC_INTERVAL_S=10 \
  "$BIN/lnflowd" --lnddir "$DEMO/lnd" --network regtest --rpcserver "127.0.0.1:$PORT" \
  --db "$DEMO/lnflow.db" --log-format json >"$DEMO/lnflowd.log" 2>&1 &
DAEMON_PID=$!
for ((i = 0; i < SECONDS_TO_RUN; i += 10)); do
  sleep $((SECONDS_TO_RUN - i < 10 ? SECONDS_TO_RUN - i : 10))
  kill -0 "$DAEMON_PID" 2>/dev/null || { echo "lnflowd exited early:"; cat "$DEMO/lnflowd.log"; exit 1; }
  echo "  ... $((i + 10 < SECONDS_TO_RUN ? i + 10 : SECONDS_TO_RUN)) s"
done
echo
"$BIN/lnflowctl" --db "$DEMO/lnflow.db" status
echo
# lnflowd's own snapshot comes every 10 min, too late for a short demo: analyze now,
# while the stream is still up, and show the saved report once everything has stopped.
"$BIN/lnflowctl" --db "$DEMO/lnflow.db" analyze --hours 1 --output "$DEMO/opportunities.json" >/dev/null
echo "saved a fresh analysis of the last hour: lnflowctl analyze --hours 1 --output $DEMO/opportunities.json"
echo "stopping lnflowd and the simulated node ..."
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; DAEMON_PID=
kill -TERM "$SIM_PID"; wait "$SIM_PID" || true; SIM_PID=
echo "done; the store stays in $DEMO/lnflow.db"
echo
echo "\$ lnflowctl report $DEMO/opportunities.json"
"$BIN/lnflowctl" report "$DEMO/opportunities.json"
