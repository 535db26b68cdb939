#!/bin/bash
# The router's publish latency under load: a devfleet (FLEET, default
# "--gateways 2 --nats-servers 3", resume on), loadtest deliver through the
# router (2,000 connections, RATE 1,000 msg/s, DURATION 30s), then the
# router's histograms read from its /metrics: wsfleet_router_publish_seconds
# (the whole publish) and, with resume, wsfleet_router_publish_ack_seconds
# (the JetStream ack), p50 and p99 interpolated within the buckets; and
# loadtest's end-to-end latency and verdict. Needs `make build bench-build`;
# uses devfleet's default ports. Figures: docs/benchmarks.md.
#   bench/router-latency.sh
#   FLEET="--gateways 2 --nats-servers 3 --resume=false" bench/router-latency.sh
set -u
cd "$(dirname "$0")/.."
FLEET=${FLEET:---gateways 2 --nats-servers 3}
RATE=${RATE:-1000}
DURATION=${DURATION:-30s}
D=$(mktemp -d /tmp/router-latency-XXXXXX)
echo "logs in $D; devfleet $FLEET"
# shellcheck disable=SC2086
bin/devfleet $FLEET --info-file "$D/info.json" --run-dir "$D/run" > "$D/devfleet.log" 2>&1 &
DF=$!
trap 'kill -INT $DF 2>/dev/null; wait $DF 2>/dev/null' EXIT
for _ in $(seq 300); do [ -s "$D/info.json" ] && break; sleep 0.2; done
[ -s "$D/info.json" ] || { cat "$D/devfleet.log"; exit 1; }
eval "$(python3 -c "
import json; d = json.load(open('$D/info.json'))
print('SECRET=%s APIKEY=%s WS=%s ROUTER=%s RADMIN=%s' % (d['jwt_hs256_secret'], d['api_key'], d['ws_url'], d['router_url'], d['router_admin_url']))
")"
LOADTEST_JWT_HS256_SECRET=$SECRET timeout 300 bin/loadtest deliver --url "$WS" --router-url "$ROUTER" --api-key "$APIKEY" \
  --via router --conns 2000 --msg-rate "$RATE" --duration "$DURATION" --progress off --json "$D/loadtest.json" > "$D/loadtest.txt" 2>&1
echo "loadtest exit $?"
grep -E 'end-to-end|delivered|verdict' "$D/loadtest.txt"
curl -s "$RADMIN/metrics" | grep -E '^wsfleet_router_publish(_ack)?_seconds_bucket' > "$D/metrics.txt"
python3 - "$D/metrics.txt" <<'PY'
import collections, re, sys
hist = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r'(\w+)_bucket\{(.*)le="([^"]+)"\} (\S+)', line)
    if m:
        le = float('inf') if m.group(3) == '+Inf' else float(m.group(3))
        hist[(m.group(1), m.group(2).rstrip(','))].append((le, float(m.group(4))))
for (name, labels), buckets in sorted(hist.items()):
    buckets.sort()
    total = buckets[-1][1]
    if total == 0:
        continue
    def quantile(p):
        target, prev_le, prev_c = p * total, 0.0, 0.0
        for le, c in buckets:
            if c >= target:
                if le == float('inf'):
                    return prev_le
                return prev_le + (le - prev_le) * (target - prev_c) / max(c - prev_c, 1)
            prev_le, prev_c = le, c
    print('%s{%s} n=%d p50=%.2f ms p99=%.2f ms' % (name, labels, total, quantile(.5) * 1000, quantile(.99) * 1000))
PY
