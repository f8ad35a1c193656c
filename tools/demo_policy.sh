#!/usr/bin/env bash
# make demo-policy: the policy loop against the simulated node. Record failures, plan
# from the fresh analysis (charge-lnd rules plus lnflow's opportunity strategy), apply,
# record again, and show the measured effects of each change.
# Usage: tools/demo_policy.sh BIN_DIR DEMO_DIR SECONDS (per phase)
set -euo pipefail
BIN=$1 DEMO=$2 PHASE=$3
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
  --rate 60 >"$DEMO/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do [ -f "$DEMO/lnd/sim.json" ] && break; sleep 0.1; done
[ -f "$DEMO/lnd/sim.json" ] || { echo "the simulated node did not start:"; cat "$DEMO/sim.log"; exit 1; }
PORT=$("$BIN/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['port'])" "$DEMO/lnd/sim.json")
MACAROONS="$DEMO/lnd/data/chain/bitcoin/regtest"

cat >"$DEMO/policies.conf" <<'RULES'
# charge-lnd reads this file too: it skips the lnflow.* sections (unknown namespace)
[mydefaults]
min_fee_ppm_delta = 5

[evidence]
# lnflow: the latest snapshot says fees or max_htlc cost this channel forwards
lnflow.recommendation = lower_fees, raise_max_htlc
lnflow.min_failures = 3
strategy = opportunity
min_fee_ppm = 50

[default]
strategy = ignore
RULES
cat >"$DEMO/lnflow.toml" <<TOML
[lnd]
lnddir = "$DEMO/lnd"
network = "regtest"
rpcserver = "127.0.0.1:$PORT"
[store]
db = "$DEMO/lnflow.db"
[ledger]
sync_interval_s = 5
[analysis]
interval_s = 10
window_hours = 1
[policy]
file = "$DEMO/policies.conf"
macaroonpath = "$MACAROONS/admin.macaroon"
min_hours_between_changes = 0
max_gap_minutes = 60
TOML

phase() {
  for ((i = 0; i < PHASE; i += 10)); do
    sleep $((PHASE - i < 10 ? PHASE - i : 10))
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "lnflowd exited early:"; cat "$DEMO/lnflowd.log"; exit 1; }
  done
}
echo "starting lnflowd, recording for $PHASE s ..."
"$BIN/lnflowd" --config "$DEMO/lnflow.toml" --log-format json >"$DEMO/lnflowd.log" 2>&1 &
DAEMON_PID=$!
phase
echo
echo "\$ lnflowctl opportunities"
"$BIN/lnflowctl" --db "$DEMO/lnflow.db" opportunities
echo
echo "\$ lnflowd policy check"
"$BIN/lnflowd" policy check --config "$DEMO/lnflow.toml"
echo
echo "\$ lnflowd policy apply --yes"
"$BIN/lnflowd" policy apply --yes --config "$DEMO/lnflow.toml"
echo
echo "recording another $PHASE s with the new policies ..."
phase
echo
echo "\$ lnflowctl policy history"
"$BIN/lnflowctl" --db "$DEMO/lnflow.db" policy history
HOURS=$("$BIN/python" -c "print(round($PHASE / 3600, 4))")
echo
echo "\$ lnflowctl policy effects --hours $HOURS   (the $PHASE s before and after each change)"
"$BIN/lnflowctl" --db "$DEMO/lnflow.db" policy effects --hours "$HOURS" --min-forwards 1
echo
echo "stopping lnflowd and the simulated node ..."
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; DAEMON_PID=
kill -TERM "$SIM_PID"; wait "$SIM_PID" || true; SIM_PID=
echo "done; the store stays in $DEMO/lnflow.db"
