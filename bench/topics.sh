#!/bin/bash
# Topics at scale: N connections (default 100000, one user each) on
# GATEWAYS gateway processes sharing a port (--reuseport; one per 18,000
# connections, at least two) and a nats-server, then three loadtest runs,
# each on fresh connections:
#   broadcast  BROADCASTS broadcasts to every connection (the reference);
#   live       every connection subscribed to one topic, LIVE_RATE messages
#              a second for LIVE_SECONDS (as many messages as broadcasts);
#   rooms      rooms of 10, the members publishing ROOMS_RATE messages a
#              second in all on their own connections
#              (--client-topic-publish direct) for ROOMS_SECONDS.
# For each: loadtest's verdict, its latency and fan-out figures, and the
# gateways' CPU over the scenario (process_cpu_seconds_total from the
# ramp's end to just before the close, summed over the gateways) per
# delivery. Needs `make build bench-build` (bin/nats-server); uses ports
# 38090, 38091-3809<GATEWAYS> and 38422 on 127.0.0.1 and source addresses
# 127.0.0.2-127.0.0.9. Figures: docs/benchmarks.md.
set -u
cd "$(dirname "$0")/.."
N=${N:-100000}
GATEWAYS=${GATEWAYS:-$(( N > 36000 ? (N + 17999) / 18000 : 2 ))}
BROADCASTS=${BROADCASTS:-10}
LIVE_RATE=${LIVE_RATE:-1}
LIVE_SECONDS=${LIVE_SECONDS:-10}
ROOMS_RATE=${ROOMS_RATE:-2000}
ROOMS_SECONDS=${ROOMS_SECONDS:-20}
SCENARIOS=${SCENARIOS:-broadcast live rooms}
export WSFLEET_GATEWAY_JWT_HS256_SECRET=example-secret-0123456789abcdef-0123456789
export LOADTEST_JWT_HS256_SECRET=$WSFLEET_GATEWAY_JWT_HS256_SECRET
DIR=$(mktemp -d /tmp/topics-bench-XXXXXX)
echo "logs in $DIR"
bin/nats-server -a 127.0.0.1 -p 38422 > "$DIR/nats.log" 2>&1 &
NATS=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/38422) 2>/dev/null && break; sleep 0.1; done
if ! kill -0 "$NATS" 2>/dev/null; then
  echo "nats-server did not start:"; tail -3 "$DIR/nats.log"; exit 1
fi
PIDS=()
METRICS=()
for i in $(seq "$GATEWAYS"); do
  # Wide-open admission and a client rate above the rooms' per-member
  # rate: the figures are the fan-out's, not the edge's.
  bin/gateway --listen 127.0.0.1:38090 --reuseport --admin-listen 127.0.0.1:3809$i --nats-url nats://127.0.0.1:38422 \
    --node-id gw-topics-$i --client-topic-publish direct --auth-timeout 60s --max-pending-connects 100000 --shed-lag 1h \
    --log-level warn > "$DIR/gw-$i.log" 2>&1 &
  PIDS+=($!)
  METRICS+=("http://127.0.0.1:3809$i/metrics")
done
for i in $(seq "$GATEWAYS"); do
  for t in $(seq 100); do curl -sf http://127.0.0.1:3809$i/readyz >/dev/null && break; sleep 0.2; done
done
MURL=$(IFS=,; echo "${METRICS[*]}")
COMMON=(--url ws://127.0.0.1:38090/ws --conns "$N" --connect-rate 4000 --workers auto --source-ips 127.0.0.2-127.0.0.9
  --progress off --metrics-url "$MURL")
for sc in $SCENARIOS; do
  case $sc in
    broadcast) args=(broadcast --via nats --nats-url nats://127.0.0.1:38422 --broadcasts "$BROADCASTS") ;;
    live) args=(live --via nats --nats-url nats://127.0.0.1:38422 --msg-rate "$LIVE_RATE" --duration "${LIVE_SECONDS}s") ;;
    rooms) args=(rooms --room-publish client --room-size 10 --msg-rate "$ROOMS_RATE" --duration "${ROOMS_SECONDS}s") ;;
    *) echo "unknown scenario $sc"; exit 2 ;;
  esac
  echo "== $sc"
  timeout 900 bin/loadtest "${args[@]}" "${COMMON[@]}" --json "$DIR/$sc.json" > "$DIR/$sc.txt" 2>&1
  echo "loadtest exit $?"
  python3 - "$DIR/$sc.json" "$sc" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
sc = sys.argv[2]
cpu = 0.0
for g in r.get("gateways") or []:
    p, b = g.get("peak") or {}, g.get("before_close") or {}
    if p and b:
        cpu += b.get("cpu_seconds", 0) - p.get("cpu_seconds", 0)
def find(d, *keys):
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        else:
            return None
    return d
print(json.dumps({"scenario": sc, "gateway_cpu_seconds": round(cpu, 2)}, sort_keys=True))
print(json.dumps({k: r[k] for k in ("counts", "latency", "broadcasts", "topics", "verdict") if k in r}, sort_keys=True)[:4000])
EOF
done
kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null
kill $NATS 2>/dev/null; wait $NATS 2>/dev/null
for sc in $SCENARIOS; do echo "== $sc (loadtest's report)"; cat "$DIR/$sc.txt"; done
