#!/bin/bash
# A reconnect storm with "since": N connections (default 20000, one user
# each) on GATEWAYS gateway processes sharing a port (--reuseport --resume;
# a process holds at most ~19,900 sockets here, so the default is one per
# 18,000 connections, at least two), a nats-server with
# JetStream, messages published to the users on NATS meanwhile; then every
# connection is reset at once and reconnects with "since" (loadtest storm
# --resume --drop-share 1). Reports loadtest's verdict (lost, duplicated,
# recovered), the time to full recovery, the replays and the gateways' peak
# RSS. Needs `make build bench-build` (bin/nats-server); uses ports 38090,
# 38091-3809<GATEWAYS> and 38422 on 127.0.0.1 and source addresses
# 127.0.0.2-127.0.0.9. Figures: docs/benchmarks.md.
set -u
cd "$(dirname "$0")/.."
N=${N:-20000}
RATE=${RATE:-1000}
GATEWAYS=${GATEWAYS:-$(( N > 36000 ? (N + 17999) / 18000 : 2 ))}
DURATION=${DURATION:-$(( N > 20000 ? 40 + N / 1250 : 40 ))s}
# The gateways' admission control: by default wide open, so that every
# reconnect is admitted at once and the figure is the replays' own; set
# GATEWAY_FLAGS="" for the defaults (503 overloaded beyond 1,024 pending
# connects or 1 s of lag, and the clients back off).
GATEWAY_FLAGS=${GATEWAY_FLAGS---auth-timeout 60s --max-pending-connects 100000 --shed-lag 1h}
export WSFLEET_GATEWAY_JWT_HS256_SECRET=example-secret-0123456789abcdef-0123456789
export LOADTEST_JWT_HS256_SECRET=$WSFLEET_GATEWAY_JWT_HS256_SECRET
DIR=$(mktemp -d /tmp/resume-storm-XXXXXX)
echo "logs in $DIR"
bin/nats-server -a 127.0.0.1 -p 38422 -js -sd "$DIR/js" > "$DIR/nats.log" 2>&1 &
NATS=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/38422) 2>/dev/null && break; sleep 0.1; done
if ! kill -0 "$NATS" 2>/dev/null; then
  echo "nats-server did not start:"; tail -3 "$DIR/nats.log"; exit 1
fi
PIDS=()
for i in $(seq "$GATEWAYS"); do
  bin/gateway --listen 127.0.0.1:38090 --reuseport --admin-listen 127.0.0.1:3809$i --nats-url nats://127.0.0.1:38422 \
    --node-id gw-storm-$i --resume $GATEWAY_FLAGS --log-level warn \
    > "$DIR/gw-$i.log" 2>&1 &
  PIDS+=($!)
done
for i in $(seq "$GATEWAYS"); do
  for t in $(seq 100); do curl -sf http://127.0.0.1:3809$i/readyz >/dev/null && break; sleep 0.2; done
done
# Peak RSS of both gateways, sampled every 200 ms.
( peak=0; while kill -0 "${PIDS[0]}" 2>/dev/null; do
    r=0; for p in "${PIDS[@]}"; do r=$((r + $(awk '/^Rss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0))); done
    [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$DIR/peak-rss-kib"; sleep 0.2; done ) &
SAMPLER=$!
timeout 600 bin/loadtest storm --url ws://127.0.0.1:38090/ws --resume --via nats --nats-url nats://127.0.0.1:38422 \
  --conns "$N" --connect-rate 4000 --msg-rate "$RATE" --drop-share 1 --drop-after 10s --duration "$DURATION" \
  --workers auto --source-ips 127.0.0.2-127.0.0.9 --progress off --json "$DIR/storm.json" > "$DIR/storm.txt" 2>&1
echo "loadtest exit $?"
for i in $(seq "$GATEWAYS"); do
  curl -s http://127.0.0.1:3809$i/metrics | grep -E '^wsfleet_gateway_(replays_total|replays_completed_total|replayed_messages_total|replay_failures_total|resume_recovered_total|resume_unrecovered_total|resume_gaps_total|replay_replica_behind_total|connections_shed_total)[ {]' | sed "s/^/gw-$i /"
done
kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null
kill $SAMPLER $NATS 2>/dev/null; wait $NATS 2>/dev/null
echo "gateways' peak RSS ($GATEWAYS together): $(cat "$DIR/peak-rss-kib" 2>/dev/null) KiB"
cat "$DIR/storm.txt"
