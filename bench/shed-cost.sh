#!/bin/bash
# What a refusal costs: the gateway CPU per upgrade refused with 503
# overloaded, against the CPU per connection admitted (upgrade, HS256
# token, NATS subscription confirmed, welcome, close), on one gateway
# process with its embedded NATS server. Needs `make build`; uses ports
# 38080, 38081 and 38222 on 127.0.0.1 and source addresses
# 127.0.0.2-127.0.0.9. N (default 20000) connections each way.
# Figures: docs/limits.md#what-a-refusal-costs.
set -u
cd "$(dirname "$0")/.."
export WSFLEET_GATEWAY_JWT_HS256_SECRET=example-secret-0123456789abcdef-0123456789
export LOADTEST_JWT_HS256_SECRET=$WSFLEET_GATEWAY_JWT_HS256_SECRET
cpu() { curl -s http://127.0.0.1:38081/metrics | awk '/^process_cpu_seconds_total/{print $2}'; }
shed() { curl -s http://127.0.0.1:38081/metrics | awk '/^wsfleet_gateway_connections_shed_total\{reason="pending"\}/{print $2}'; }
start() {
  bin/gateway --listen 127.0.0.1:38080 --admin-listen 127.0.0.1:38081 --nats-embedded-listen 127.0.0.1:38222 \
    --node-id gw-shed --auth-timeout 10m --handshake-timeout 10m --max-connect-rate 0 "$@" > /tmp/shedgw.log 2>&1 &
  GW=$!
  for i in $(seq 50); do curl -sf http://127.0.0.1:38081/metrics >/dev/null && break; sleep 0.2; done
}
N=${N:-20000}
# 1) refused: one upgrade that never authenticates holds the only pending slot
start --max-pending-connects 1
exec 3<>/dev/tcp/127.0.0.1/38080
printf 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' >&3
sleep 1
c0=$(cpu); s0=$(shed)
timeout 60 bin/loadtest connect --url ws://127.0.0.1:38080/ws --conns $N --connect-rate 5000 --ramp-backoff=false --connect-timeout 5s --duration 1s --progress off --source-ips 127.0.0.2-127.0.0.9 > /tmp/shed-lt1.txt 2>&1
c1=$(cpu); s1=$(shed)
exec 3>&-
kill $GW; wait $GW 2>/dev/null
echo "refused: $s0 -> $s1 refusals, gateway CPU $c0 -> $c1 s" | awk -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" '{printf "refused: %d upgrades, gateway CPU %.2f s, %.0f us each\n", s1-s0, c1-c0, (c1-c0)/(s1-s0)*1e6}'

# 2) admitted: the same connects, every one upgraded, authenticated and welcomed
start
c0=$(cpu)
timeout 60 bin/loadtest connect --url ws://127.0.0.1:38080/ws --conns $N --connect-rate 5000 --duration 1s --progress off --source-ips 127.0.0.2-127.0.0.9 > /tmp/shed-lt2.txt 2>&1
c1=$(cpu)
kill $GW; wait $GW 2>/dev/null
awk -v n="$N" -v c0="$c0" -v c1="$c1" 'BEGIN{printf "admitted: %d connections, gateway CPU %.2f s, %.0f us each (their close included)\n", n, c1-c0, (c1-c0)/n*1e6}'

