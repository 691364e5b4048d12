#!/usr/bin/env bash
# bench/memory.sh -- what gateway-held Responses cost besides CPU: the
# Redis memory of a stored turn and of a 1,000-turn conversation, and
# whether a long history stalls the worker's shared Redis connection for
# the other requests on it.
#
# Usage:   bench/memory.sh /abs/path/to/ngx_http_model_gateway_module.so
#
# Sizes: a 1,000-turn conversation (truncation auto; each turn a ~200
# byte input and the mock's ~0.9 KB answer), its Redis memory (MEMORY
# USAGE of its list, its hash and the 1,000 response records) per turn
# and in all.
#
# One gateway worker (pinned like bench/run.sh's front ends), one Redis,
# the Anthropic mock.  A chain is grown to ~490 KB of history (95 turns,
# just under model_gateway_history_max_bytes' 512k), then:
#   alone   small chat requests with a gateway key (one LIMIT script
#           each, on the worker's Redis connection), wrk -c8;
#   loaded  the same while wrk -c4 keeps reading the long chain (each
#           request an MREAD of ~490 KB on the same connection, then a
#           ~490 KB chat request to the mock; store: false, so the chain
#           does not grow).
# Prints p50/p99 of the small requests in both runs, the long reads' rate,
# and Redis' own time per script call (INFO commandstats): how long the
# connection is busy with one long read.  Bounded: a few seconds per run.
#
# Knobs: LH_SECONDS=5, NGINX, WRK, BENCH_FRONT_CPU=0, BENCH_HARNESS_CPU=1.
set -euo pipefail

LH_SECONDS=${LH_SECONDS:-5}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
FRONT=(taskset -c "${BENCH_FRONT_CPU:-0}")
HARNESS=(taskset -c "${BENCH_HARNESS_CPU:-1}")
if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then
    FRONT=()
    HARNESS=()
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$BENCH_DIR")
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 MODULE.so" >&2; exit 2; }
MODULE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")

WORK=$TOP/build/bench/memory-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$WORK/tmp"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
}

# start NAME TEMPLATE PORT KEY=VALUE...
start() {
    local name=$1 tpl=$2 port=$3 kv expr=() pin=("${FRONT[@]}")
    shift 3
    for kv in "$@" NAME="$name" WORKDIR="$WORK" PORT="$port"; do
        expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${expr[@]}" "$tpl" >"$WORK/$name.conf"
    mkdir -p "$WORK/tmp/$name"
    [ "$name" = mock ] && pin=("${HARNESS[@]}")
    "${pin[@]}" "$NGINX" -c "$WORK/$name.conf" -e "$WORK/$name.stderr" \
        >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        ss -Htln "sport = :$port" | grep -q . && return 0
        sleep 0.1
    done
    echo "memory.sh: $name did not start" >&2
    exit 1
}

RPORT=$(free_port)
"${HARNESS[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done

printf 'sk-bench\n' >"$WORK/key"
MPORT=$(free_port)
start mock "$BENCH_DIR/mock.conf.in" "$MPORT"
GPORT=$(free_port)
start gateway "$BENCH_DIR/gateway-responses.conf.in" "$GPORT" \
    MODULE="$MODULE" MOCKPORT="$MPORT" WORKERS=1 REDISPORT="$RPORT"

KEY=$("$TOP/bin/mg-key" --tenant bench --id bench-long \
          --rpm 1000000000 --tpm 1000000000000 \
          --redis "127.0.0.1:$RPORT" | head -n 1)
URL=http://127.0.0.1:$GPORT/v1

mem_of() {
    redis-cli -p "$RPORT" --scan --pattern "$1" \
        | while read -r k; do redis-cli -p "$RPORT" memory usage "$k" samples 0; done \
        | awk '{ s += $1 } END { print s + 0 }'
}

# a 1,000-turn conversation
CONV=$(curl -sS -X POST -H 'Content-Type: application/json' \
           -H "Authorization: Bearer $KEY" --data-binary '{}' \
           "$URL/conversations" | grep -o '"id":"conv_mgw_[0-9a-f]*"' \
           | cut -d'"' -f4)
[ -n "$CONV" ] || { echo "memory.sh: no conversation" >&2; exit 1; }
TURN=$(printf 'How do we keep the replication slot small while the copy runs, and what should page the on-call person? %.0s' 1 2)
for i in $(seq 1 1000); do
    curl -sS -o /dev/null -w '%{http_code}\n' -X POST \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $KEY" \
        --data-binary "{\"model\":\"gpt-4o-mini\",\"conversation\":\"$CONV\",\"truncation\":\"auto\",\"input\":\"$i $TURN\"}" \
        "$URL/responses"
done | sort | uniq -c | awk '{ printf "conversation turns: %d answered %s\n", $1, $2 }'
LIST=$(redis-cli -p "$RPORT" hget "mg:{bench}:gw:c:$CONV" l)
L=$(redis-cli -p "$RPORT" memory usage "mg:{bench}:gw:l:$LIST" samples 0)
C=$(redis-cli -p "$RPORT" memory usage "mg:{bench}:gw:c:$CONV" samples 0)
R=$(mem_of 'mg:{bench}:gw:r:*')
N=$(redis-cli -p "$RPORT" llen "mg:{bench}:gw:l:$LIST")
echo "1,000-turn conversation: items $((L / 1024)) KB ($((N - 1)) items)," \
     "conversation $C bytes, response records $((R / 1024)) KB;" \
     "$(( (L + C + R) / 1024 )) KB in all, $(( (L + C + R) / 1000 )) bytes a turn"
redis-cli -p "$RPORT" --scan --pattern 'mg:{bench}:gw:*' \
    | xargs -r redis-cli -p "$RPORT" unlink >/dev/null

# the long chain: 95 turns of ~4.3 KB input and the mock's ~0.9 KB answer
INPUT=$(printf 'word%.0s ' $(seq 1 860))
PREV=""
for i in $(seq 1 95); do
    if [ -n "$PREV" ]; then
        body="{\"model\":\"gpt-4o-mini\",\"previous_response_id\":\"$PREV\",\"input\":\"turn $i $INPUT\"}"
    else
        body="{\"model\":\"gpt-4o-mini\",\"input\":\"turn $i $INPUT\"}"
    fi
    PREV=$(curl -sS -X POST -H 'Content-Type: application/json' \
               -H "Authorization: Bearer $KEY" --data-binary "$body" \
               "$URL/responses" | grep -o '"id":"resp_mgw_[0-9a-f]*"' \
               | head -n 1 | cut -d'"' -f4)
    [ -n "$PREV" ] || { echo "memory.sh: turn $i failed" >&2; exit 1; }
done
HIST=$(mem_of 'mg:{bench}:gw:l:*')

cat >"$WORK/small.json" <<EOF
{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}
EOF
cat >"$WORK/long.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","store":false,"previous_response_id":"$PREV","input":"x"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
EOF

small() {
    BENCH_BODY=$WORK/small.json BENCH_AUTH=$KEY "${HARNESS[@]}" "$WRK" -t1 \
        -c8 -d"${LH_SECONDS}s" --latency -s "$BENCH_DIR/post.lua" \
        "$URL/chat/completions" >"$WORK/$1.txt"
    awk -v l="$1" '$1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
        /^Requests\/sec/ { r = $2 }
        END { printf "%s: small requests %d req/s, p50 %s, p99 %s\n", l, r, p50, p99 }' \
        "$WORK/$1.txt"
}

# the worker's CPU time so far, in clock ticks
worker_cpu() {
    local w
    w=$(pgrep -P "$(cat "$WORK/gateway.pid")" | head -n 1)
    awk '{ print $14 + $15 }' "/proc/$w/stat"
}

small alone

# the long reads alone: Redis' time per MREAD, the worker's per read
redis-cli -p "$RPORT" config resetstat >/dev/null
c0=$(worker_cpu)
"${HARNESS[@]}" "$WRK" -t1 -c4 -d"${LH_SECONDS}s" -s "$WORK/long.lua" \
    "$URL/responses" >"$WORK/long-alone.txt" 2>&1
c1=$(worker_cpu)
n=$(awk '/ requests in / { print $1 }' "$WORK/long-alone.txt")
awk -v n="$n" -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" \
    -v s="$LH_SECONDS" 'BEGIN { printf "long reads alone: %d req/s, worker CPU %.2f ms each\n", n / s, (b - a) / hz * 1000 / n }'
redis-cli -p "$RPORT" info commandstats | awk -F'[:=,]' \
    '/^cmdstat_evalsha/ { printf "redis: %.0f us per script call (MREAD of the long chain and the LIMIT of the same request)\n", $7 }'

"${HARNESS[@]}" "$WRK" -t1 -c4 -d"$((LH_SECONDS + 2))s" -s "$WORK/long.lua" \
    "$URL/responses" >"$WORK/long.txt" 2>&1 &
LONG=$!
sleep 1
small loaded
wait "$LONG"
awk '/^Requests\/sec/ { printf "loaded: long-history reads %d req/s\n", $2 }' \
    "$WORK/long.txt"
echo "history of the long chain: $((HIST / 1024)) KB in Redis (MEMORY USAGE of its lists)"
echo "work dir: $WORK"
