#!/usr/bin/env bash
# bench/run.sh -- throughput and tail latency of the model gateway, measured
# against stock nginx proxy_pass doing the same job (client -> mock provider).
#
# Usage:   bench/run.sh /abs/path/to/ngx_http_model_gateway_module.so
#          (`make bench` builds the module and calls this)
#
# Knobs (environment variables):
#   BENCH_SECONDS=10       length of each measured wrk run, in seconds
#   BENCH_ROUNDS=3         rounds; each round measures proxy_pass then gateway,
#                          so the two alternate and share the machine's drift;
#                          ratios are per round, reported as median and spread
#   BENCH_CONNECTIONS=16   wrk connections (always one wrk thread: -t1)
#   BENCH_WARMUP=2         warm-up seconds per target before the first round
#   BENCH_MAX_ERRORS=5     socket errors, and separately non-2xx responses,
#                          tolerated per wrk run before the bench aborts
#   BENCH_SCENARIOS=basic  space-separated scenarios to run (functions named
#                          scenario_<name> below); the LAST two lines printed
#                          are the ratios of the FIRST scenario
#   BENCH_FAKE_GATEWAY=1   put a second plain proxy_pass nginx in the gateway
#                          slot (tests this harness without the module; the
#                          ratios should then be ~1.00)
#   BENCH_FRONT_CPU=0      the CPU the front ends under test (proxy_pass and
#   BENCH_HARNESS_CPU=1    gateway) are pinned to, and the one wrk, the mock
#                          and Redis are pinned to (taskset); with one CPU
#                          only, nothing is pinned
#   BENCH_BASELINE=PATH    another build of the module (the one before a
#                          change): each scenario also runs it, in the same
#                          rounds, and reports the module's CPU per request
#                          over the baseline's as NAME/baseline
#   NGINX=/usr/sbin/nginx  nginx binary;  WRK=wrk  wrk binary
#
# Output: one line per measured run ("proxy_pass: N req/s, p99 X ms, CPU
# Y us/request, busy Z% (...)"), a summary per scenario, and at the end, per
# scenario (the first one named "gateway"):
#   NAME/proxy_pass cpu per request ratio: X.XX  (median over rounds)
#   NAME/proxy_pass throughput ratio: X.XX       (median over rounds)
#   NAME/proxy_pass p99 latency ratio: X.XX      (median over rounds)
# CPU per request is the front end's workers' utime+stime (from /proc) over
# a run divided by the requests served: it does not depend on how busy the
# machine's other core was. A throughput ratio counts only when the front
# end kept its CPU at least 90% busy in every run; otherwise the harness
# was the limit, the line says so, and CPU per request is the figure.
# Everything (configs, logs, raw wrk output) stays in build/bench/<run>/,
# build/bench/last points at the newest run.
set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-16}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_MAX_ERRORS=${BENCH_MAX_ERRORS:-5}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-basic balanced stateful stateful_hot stateful_cluster auth auth_batch stateful_auth anthropic stream_anthropic bedrock bedrock_key responses_gateway}
BENCH_FAKE_GATEWAY=${BENCH_FAKE_GATEWAY:-0}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
BENCH_FRONT_CPU=${BENCH_FRONT_CPU:-0}
BENCH_HARNESS_CPU=${BENCH_HARNESS_CPU:-1}
BENCH_BASELINE=${BENCH_BASELINE:-}

# command prefixes that pin to the front ends' CPU and to the harness's
# (taskset); empty when the machine has one CPU or no taskset. Prefixes,
# not a function: "$!" of a background command must be the process itself
PIN=1
if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then
    PIN=0
fi
FRONT=()
HARNESS=()
if [ "$PIN" = 1 ]; then
    FRONT=(taskset -c "$BENCH_FRONT_CPU")
    HARNESS=(taskset -c "$BENCH_HARNESS_CPU")
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$BENCH_DIR")
LUA=$BENCH_DIR/post.lua

# ---------------------------------------------------------------- helpers

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# show_logs NAME: the tail of an nginx instance's stderr and error log
show_logs() {
    local f
    for f in "$WORK/$1.stderr" "$WORK/$1.error.log"; do
        if [ -s "$f" ]; then
            printf -- '--- %s (last 20 lines)\n' "$f" >&2
            tail -n 20 "$f" >&2
        fi
    done
}

# pick_port: sets PICKED_PORT to a port nobody listens on, below the
# ephemeral range (32768+) so outgoing connections cannot collide with it.
USED_PORTS=" "
pick_port() {
    local p listening
    listening=" $(ss -Htln 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' \
                  | tr '\n' ' ') "
    for _ in $(seq 1 500); do
        p=$((20000 + RANDOM % 12000))
        case "$listening$USED_PORTS" in *" $p "*) continue ;; esac
        # something answering there after all (not visible to ss)?
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        USED_PORTS+="$p "
        PICKED_PORT=$p
        return 0
    done
    die "no free TCP port found on 127.0.0.1"
}

# render TEMPLATE OUT KEY=VALUE...: replaces every @KEY@ in TEMPLATE
render() {
    local tpl=$1 out=$2 kv k v
    shift 2
    local -a expr=()
    for kv in "$@"; do
        k=${kv%%=*}
        v=${kv#*=}
        v=${v//\\/\\\\}
        v=${v//|/\\|}
        v=${v//&/\\&}
        expr+=(-e "s|@${k}@|${v}|g")
    done
    sed "${expr[@]}" "$tpl" >"$out"
    if grep -n '@[A-Z][A-Z_]*@' "$out" >&2; then
        die "unfilled placeholder in $out (from $tpl)"
    fi
}

# wait_listen PID PORT: until the nginx with master PID listens on PORT
# (checked with ss -p, so another process on that port cannot fool us)
wait_listen() {
    local pid=$1 port=$2
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if ss -Htlnp "sport = :$port" 2>/dev/null | grep -q "pid=$pid,"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

declare -A NGX_PID=() NGX_PORT=()

# start_nginx NAME TEMPLATE KEY=VALUE...: renders TEMPLATE (plus NAME,
# WORKDIR and a fresh PORT) into $WORK/NAME.conf and runs nginx on it in the
# background; sets NGX_PID[NAME] and NGX_PORT[NAME]. The mock runs on the
# harness's CPU, every other instance (a front end under test) on its own.
start_nginx() {
    local name=$1 tpl=$2 pid port
    local -a pin=("${FRONT[@]}")
    shift 2
    [ "$name" = mock ] && pin=("${HARNESS[@]}")
    local conf=$WORK/$name.conf
    mkdir -p "$WORK/tmp/$name"
    for _ in 1 2 3 4 5; do
        pick_port
        port=$PICKED_PORT
        render "$tpl" "$conf" NAME="$name" WORKDIR="$WORK" PORT="$port" "$@"
        : >"$WORK/$name.error.log"
        "${pin[@]}" "$NGINX" -p "$WORK/" -c "$conf" \
            >"$WORK/$name.stderr" 2>&1 &
        pid=$!
        NGX_PID[$name]=$pid
        if wait_listen "$pid" "$port"; then
            NGX_PORT[$name]=$port
            log "started $name: pid $pid, 127.0.0.1:$port ($conf)"
            return 0
        fi
        stop_nginx "$name"
        if grep -qs "Address already in use" "$WORK/$name.stderr" \
                "$WORK/$name.error.log"; then
            log "$name: port $port was taken meanwhile, retrying"
            continue
        fi
        show_logs "$name"
        die "nginx '$name' failed to start ($conf)"
    done
    die "nginx '$name': no usable port after 5 attempts"
}

# stop_nginx NAME: fast shutdown (TERM), KILL after 5 s; silent
stop_nginx() {
    local name=$1 pid
    pid=${NGX_PID[$name]:-}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "NGX_PID[$name]"
}

REDIS_PID=""
REDIS_PORT=""
CLUSTER_PIDS=()
CLUSTER_PORTS=()

cleanup() {
    local name
    for name in "${!NGX_PID[@]}"; do
        stop_nginx "$name"
    done
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
    for pid in "${CLUSTER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CLUSTER_PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# check_alive NAME...: the instances still run and no worker crashed
check_alive() {
    local name
    for name in "$@" $(for n in "$@"; do
                           [ -n "${NGX_PID[$n-base]:-}" ] && echo "$n-base"
                       done); do
        if ! kill -0 "${NGX_PID[$name]}" 2>/dev/null; then
            show_logs "$name"
            die "nginx '$name' died during the benchmark"
        fi
        if grep -qs "exited on signal" "$WORK/$name.error.log"; then
            grep -s "exited on signal" "$WORK/$name.error.log" | head -5 >&2
            show_logs "$name"
            die "a worker of nginx '$name' crashed during the benchmark"
        fi
        if grep -qsE '\[(alert|crit|emerg)\]' "$WORK/$name.error.log"; then
            log "WARNING: $name logged alerts, see $WORK/$name.error.log:"
            grep -sE '\[(alert|crit|emerg)\]' "$WORK/$name.error.log" \
                | head -3 >&2
        fi
    done
}

# gen_body OUT: a realistic ~20 KB multi-turn chat completion request.
# Deterministic; the prose needs no JSON escaping.
gen_body() {
    local out=$1
    local system="You are a senior site reliability engineer helping a small \
platform team plan and run a database migration. Answer precisely, prefer \
concrete steps over general advice, call out risks and how to detect them \
early, and keep the tone calm and practical. When numbers are involved, show \
the arithmetic. When something is uncertain, say so and suggest how to find out."
    local -a user=(
        "We run a Postgres cluster for the orders service, about two terabytes, with one primary and two replicas in the same region."
        "The new cluster is managed by the cloud provider and lives in a different VPC, peered with ours, with roughly one millisecond of extra latency."
        "Our busiest hour sees around four thousand writes per second and twenty thousand reads per second, mostly point lookups by order id."
        "Some reports run long analytical queries against the replicas at night, and they sometimes hold snapshots open for more than an hour."
        "We cannot afford more than a few seconds of write unavailability, and the business wants the cutover done before the holiday freeze."
        "The team is five people, two of whom are on call this month, so whatever we do has to be simple enough to run at three in the morning."
        "I am worried about sequences, about the foreign keys to the payments schema, and about the cron jobs that nobody really owns anymore."
        "Can you also tell me what we should monitor during each step, and what numbers would make you stop and roll back without discussion?"
        "Last time we tried logical replication the initial copy took two days and the slot grew so much that the primary almost ran out of disk."
        "Please keep the answer structured, because I will paste it into the design document and the change request for the review board."
    )
    local -a assistant=(
        "Given the size and write rate, logical replication with a pre-seeded copy is the safest route, because it lets you keep both clusters in sync for days."
        "Start by taking a base backup of the primary, restore it into the new cluster, and only then create the subscription with copy_data disabled."
        "That avoids the two day initial copy you hit last time, and it keeps the replication slot small because it only has to carry recent changes."
        "Watch the slot lag in bytes and in seconds, and alert when it crosses one gigabyte or thirty seconds, which at your write rate is a clear anomaly."
        "Sequences are not replicated logically, so script a step that reads every sequence on the old primary and sets it on the new one with a safety margin."
        "For the payments foreign keys, replicate both schemas in the same publication so the constraints stay satisfiable on the subscriber at all times."
        "The nightly reports should move to the new replicas first, a week before the cutover, which tests the new cluster with real load at low risk."
        "Cron jobs are the classic source of surprises, so inventory them now by grepping the crontabs and the job scheduler for the old connection string."
        "For the cutover itself, put the application into read only mode, wait for the slot lag to reach zero, bump the sequences, and switch the DNS name."
        "Rehearse the whole sequence twice on a staging copy, time each step, and write the exact commands into the runbook so the on call person can paste them."
        "Roll back without discussion if the error rate doubles, if p99 latency exceeds three times the baseline for five minutes, or if the lag keeps growing."
        "With four thousand writes per second and a ten second read only window, about forty thousand writes would be delayed, which the queue can absorb."
    )
    local nu=${#user[@]} na=${#assistant[@]}
    local t k content role
    {
        printf '{"model":"gpt-4o-mini","messages":['
        printf '{"role":"system","content":"%s"}' "$system"
        for ((t = 0; t < 20; t++)); do
            content=""
            if ((t % 2 == 0)); then
                role=user
                for ((k = 0; k < 7; k++)); do
                    content+="${content:+ }${user[(t * 3 + k) % nu]}"
                done
            else
                role=assistant
                for ((k = 0; k < 7; k++)); do
                    content+="${content:+ }${assistant[(t * 5 + k) % na]}"
                done
            fi
            printf ',{"role":"%s","content":"%s"}' "$role" "$content"
        done
        printf '],"temperature":0.7}\n'
    } >"$out"
    if command -v perl >/dev/null 2>&1; then
        perl -MJSON::PP -e 'local $/; open my $f, "<", $ARGV[0] or die $!;
            JSON::PP->new->decode(<$f>)' "$out" \
            || die "generated request body $out is not valid JSON"
    fi
}

# sanity LABEL URL [NAME]: one request with curl; expects HTTP 200 and a
# chat.completion body (on failure shows the logs of nginx instance NAME)
sanity() {
    local label=$1 url=$2 name=${3:-} code out=$WORK/sanity-$1.json
    code=$(curl -sS --max-time 10 -o "$out" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' \
        -H "Authorization: Bearer ${BENCH_AUTH:-client-key}" \
        --data-binary @"$BODY" "$url") \
        || { [ -z "$name" ] || show_logs "$name"
             die "sanity check of $label ($url): curl failed"; }
    if [ "$code" != 200 ] || ! grep -qF '"chat.completion"' "$out"; then
        printf -- '--- response body (first 500 bytes):\n' >&2
        head -c 500 "$out" >&2
        echo >&2
        [ -z "$name" ] || show_logs "$name"
        die "sanity check of $label ($url) failed: HTTP $code" \
            "(expected 200 and a \"chat.completion\" body)"
    fi
    log "sanity check of $label OK (HTTP 200, $(wc -c <"$out") byte body)"
}

# active_opens: the kernel's count of outgoing TCP connections so far (for
# the whole network namespace, so other activity on the machine counts too)
active_opens() {
    awk '/^Tcp:/ { if (!c) { for (i = 1; i <= NF; i++) if ($i == "ActiveOpens") c = i }
                   else { print $c; exit } }' /proc/net/snmp 2>/dev/null || true
}

# workers_cpu NAME: the CPU time (clock ticks, utime+stime) the workers of
# nginx instance NAME have used so far
workers_cpu() {
    local w
    for w in $(ps --ppid "${NGX_PID[$1]}" -o pid=); do
        cat "/proc/$w/stat" 2>/dev/null
    done | awk '{ s += $14 + $15 } END { print s + 0 }'
}

# instance_of URL: the nginx instance listening on URL's port
instance_of() {
    local port n
    port=${1#http://127.0.0.1:}
    port=${port%%/*}
    for n in "${!NGX_PORT[@]}"; do
        [ "${NGX_PORT[$n]}" = "$port" ] && { echo "$n"; return; }
    done
}

now_ns() { date +%s%N; }

# measure LABEL URL SECONDS OUTFILE: one wrk run; sets M_RPS (requests per
# second), M_P99 (99th percentile latency in ms), M_CPU (the front end's
# worker CPU time per request, in microseconds), M_BUSY (that CPU time over
# the run's wall time, in %: 100 is one CPU kept busy) and M_OPENS (new
# outgoing TCP connections per request, wrk's own excluded: ~0 when the
# front end reuses its backend connections, ~1 when it connects for every
# request); aborts on errors.
measure() {
    local label=$1 url=$2 secs=$3 out=$4 non2xx sockerr reqs opens0 opens1
    local inst cpu0 cpu1 t0 t1 hz
    inst=$(instance_of "$url")
    hz=$(getconf CLK_TCK)
    opens0=$(active_opens)
    cpu0=$(workers_cpu "$inst")
    t0=$(now_ns)
    if ! BENCH_BODY=$BODY timeout -k 5 $((secs + 30)) \
            "${HARNESS[@]}" "$WRK" -t1 \
            -c"$BENCH_CONNECTIONS" -d"${secs}s" --timeout 10s --latency \
            -s "$LUA" "$url" >"$out" 2>&1; then
        cat "$out" >&2
        die "wrk failed against $label ($url)"
    fi
    t1=$(now_ns)
    cpu1=$(workers_cpu "$inst")
    opens1=$(active_opens)
    M_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    M_P99=$(awk '$1 == "99%" {
            v = $2
            if (v ~ /us$/)      { sub(/us$/, "", v); v = v / 1000 }
            else if (v ~ /ms$/) { sub(/ms$/, "", v); v = v + 0 }
            else if (v ~ /s$/)  { sub(/s$/, "", v);  v = v * 1000 }
            else if (v ~ /m$/)  { sub(/m$/, "", v);  v = v * 60000 }
            else if (v ~ /h$/)  { sub(/h$/, "", v);  v = v * 3600000 }
            printf "%.3f\n", v }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    non2xx=$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2 }' "$out")
    sockerr=$(awk '/Socket errors:/ {
            s = 0
            for (i = 1; i <= NF; i++) { v = $i; sub(/,$/, "", v); if (v ~ /^[0-9]+$/) s += v }
            print s }' "$out")
    non2xx=${non2xx:-0}
    sockerr=${sockerr:-0}
    if [ -z "$M_RPS" ] || [ -z "$M_P99" ] || [ -z "$reqs" ]; then
        cat "$out" >&2
        die "could not parse wrk output for $label ($out)"
    fi
    if [ "$reqs" -eq 0 ]; then
        cat "$out" >&2
        die "$label: wrk completed no request"
    fi
    if [ "$non2xx" -gt "$BENCH_MAX_ERRORS" ]; then
        cat "$out" >&2
        die "$label: $non2xx non-2xx responses out of $reqs (limit" \
            "BENCH_MAX_ERRORS=$BENCH_MAX_ERRORS)"
    fi
    if [ "$sockerr" -gt "$BENCH_MAX_ERRORS" ]; then
        cat "$out" >&2
        die "$label: $sockerr socket errors (limit" \
            "BENCH_MAX_ERRORS=$BENCH_MAX_ERRORS)"
    fi
    M_OPENS=$(awk -v a="${opens0:-0}" -v b="${opens1:-0}" -v c="$BENCH_CONNECTIONS" \
        -v n="$reqs" 'BEGIN { v = (b - a - c) / n; if (v < 0) v = 0; printf "%.2f\n", v }')
    M_CPU=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$hz" -v n="$reqs" \
        'BEGIN { printf "%.2f\n", (b - a) / hz * 1e6 / n }')
    M_BUSY=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$hz" -v t0="$t0" \
        -v t1="$t1" 'BEGIN { printf "%.1f\n", (b - a) / hz * 100 / ((t1 - t0) / 1e9) }')
    if [ "$non2xx" -gt 0 ] || [ "$sockerr" -gt 0 ]; then
        log "WARNING: $label: $non2xx non-2xx, $sockerr socket errors (see $out)"
    fi
}

# best / median of numbers given as arguments
best()   { printf '%s\n' "$@" | sort -g | tail -n 1; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# ratio A B: A/B with two decimals
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.2f\n", a / b }'
}
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f\n", d, v }'; }

# report_opens LABEL: on stderr, the new connections per request of the last
# measure, with a warning when the backend connections are not reused
report_opens() {
    log "$1: $M_OPENS new TCP connections per request"
    if awk -v v="$M_OPENS" 'BEGIN { exit !(v > 0.2) }'; then
        log "WARNING: $1 opened a new connection for most requests:" \
            "backend keepalive not effective?"
    fi
}

# spread X...: "min-max" of the numbers
spread() {
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
        END { printf "%s-%s\n", lo, hi }'
}

# compare TAG LABEL_A URL_A LABEL_B URL_B: warm both up, then alternate
# A, B for BENCH_ROUNDS rounds. Prints one line per run and sets, each the
# median over the rounds of B/A within a round (the two runs of a round
# share the machine's drift): CMP_TPUT_RATIO (req/s), CMP_CPU_RATIO (CPU
# per request), CMP_P99_RATIO (p99), their spreads CMP_*_SPREAD, and
# CMP_BOUND (1 when every run kept its front end's CPU >= 90% busy, so
# that throughput measured the front end, not the harness).
compare() {
    local tag=$1 la=$2 ua=$3 lb=$4 ub=$5 r
    local -a rps_a=() rps_b=() p99_a=() p99_b=() tr=() cr=() pr=() br=()
    local ca cb inst ubase=""
    CMP_BOUND=1
    inst=$(instance_of "$ub")
    if [ -n "$BENCH_BASELINE" ] && [ -n "${NGX_PORT[$inst-base]:-}" ]; then
        ubase=${ub/:${NGX_PORT[$inst]}\//:${NGX_PORT[$inst-base]}/}
    fi
    log "[$tag] warm-up: ${BENCH_WARMUP}s each"
    measure "$la" "$ua" "$BENCH_WARMUP" "$WORK/$tag-warmup-a.txt"
    measure "$lb" "$ub" "$BENCH_WARMUP" "$WORK/$tag-warmup-b.txt"
    [ -z "$ubase" ] || measure "$lb-base" "$ubase" "$BENCH_WARMUP" \
                           "$WORK/$tag-warmup-base.txt"
    for ((r = 1; r <= BENCH_ROUNDS; r++)); do
        measure "$la" "$ua" "$BENCH_SECONDS" "$WORK/$tag-round$r-a.txt"
        rps_a+=("$M_RPS"); p99_a+=("$M_P99"); ca=$M_CPU
        echo "$la: $(fmt "$M_RPS" 0) req/s, p99 $(fmt "$M_P99" 2) ms, CPU $M_CPU us/request, busy $M_BUSY% ($tag, round $r/$BENCH_ROUNDS)"
        report_opens "$la"
        awk -v b="$M_BUSY" 'BEGIN { exit !(b < 90) }' && CMP_BOUND=0
        measure "$lb" "$ub" "$BENCH_SECONDS" "$WORK/$tag-round$r-b.txt"
        rps_b+=("$M_RPS"); p99_b+=("$M_P99"); cb=$M_CPU
        echo "$lb: $(fmt "$M_RPS" 0) req/s, p99 $(fmt "$M_P99" 2) ms, CPU $M_CPU us/request, busy $M_BUSY% ($tag, round $r/$BENCH_ROUNDS)"
        report_opens "$lb"
        awk -v b="$M_BUSY" 'BEGIN { exit !(b < 90) }' && CMP_BOUND=0
        if [ -n "$ubase" ]; then
            measure "$lb-base" "$ubase" "$BENCH_SECONDS" \
                "$WORK/$tag-round$r-base.txt"
            echo "$lb (baseline module): $(fmt "$M_RPS" 0) req/s, CPU $M_CPU us/request, busy $M_BUSY% ($tag, round $r/$BENCH_ROUNDS)"
            br+=("$(ratio "$cb" "$M_CPU")")
        fi
        tr+=("$(ratio "${rps_b[-1]}" "${rps_a[-1]}")")
        cr+=("$(ratio "$cb" "$ca")")
        pr+=("$(ratio "${p99_b[-1]}" "${p99_a[-1]}")")
    done
    CMP_TPUT_RATIO=$(fmt "$(median "${tr[@]}")" 2)
    CMP_CPU_RATIO=$(fmt "$(median "${cr[@]}")" 2)
    CMP_P99_RATIO=$(fmt "$(median "${pr[@]}")" 2)
    CMP_TPUT_SPREAD=$(spread "${tr[@]}")
    CMP_CPU_SPREAD=$(spread "${cr[@]}")
    CMP_P99_SPREAD=$(spread "${pr[@]}")
    CMP_BASE_CPU_RATIO=""
    if [ -n "$ubase" ]; then
        CMP_BASE_CPU_RATIO="$(fmt "$(median "${br[@]}")" 2) ($(spread "${br[@]}"))"
        echo "[$tag] $lb/baseline module cpu per request per round: ${br[*]}"
    fi
    echo "[$tag] $lb/$la per round: throughput ${tr[*]}; cpu per request ${cr[*]}; p99 ${pr[*]}"
    echo "[$tag] $lb/$la median: throughput $CMP_TPUT_RATIO ($CMP_TPUT_SPREAD)," \
         "cpu per request $CMP_CPU_RATIO ($CMP_CPU_SPREAD)," \
         "p99 $CMP_P99_RATIO ($CMP_P99_SPREAD)$([ "$CMP_BOUND" = 1 ] || echo "; front end under 90% busy: throughput not meaningful")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" \
        "$(best "${rps_a[@]}")" "$(median "${p99_a[@]}")" \
        "$(best "${rps_b[@]}")" "$(median "${p99_b[@]}")" \
        "$CMP_TPUT_RATIO" "$CMP_P99_RATIO" "$CMP_CPU_RATIO" "$CMP_BOUND" \
        >>"$WORK/results.tsv"
}

url_of() { echo "http://127.0.0.1:${NGX_PORT[$1]}/v1/chat/completions"; }

# ensure_mock: the shared mock provider (started once, used by every scenario)
ensure_mock() {
    [ -n "${NGX_PID[mock]:-}" ] && return 0
    start_nginx mock "$BENCH_DIR/mock.conf.in"
}

# start_proxy NAME WORKERS: a plain proxy_pass nginx in front of the mock
start_proxy() {
    start_nginx "$1" "$BENCH_DIR/proxy.conf.in" \
        MOCKPORT="${NGX_PORT[mock]}" WORKERS="$2"
}

# start_gateway NAME WORKERS [TEMPLATE]: the module in front of the mock
# (or, with BENCH_FAKE_GATEWAY=1, one more plain proxy)
start_gateway() {
    local name=$1 workers=$2 tpl=${3:-$BENCH_DIR/gateway.conf.in}
    if [ "$BENCH_FAKE_GATEWAY" = 1 ]; then
        log "BENCH_FAKE_GATEWAY=1: '$name' is a plain proxy_pass, not the module"
        start_proxy "$name" "$workers"
        return
    fi
    start_gw "$name" "$tpl" MOCKPORT="${NGX_PORT[mock]}" WORKERS="$workers"
}

# start_gw NAME TEMPLATE KEY=VALUE...: the module under test as NAME, and
# with BENCH_BASELINE the baseline module as NAME-base, alike but for it
start_gw() {
    local name=$1 tpl=$2
    shift 2
    start_nginx "$name" "$tpl" MODULE="$MODULE" "$@"
    if [ -n "$BENCH_BASELINE" ]; then
        start_nginx "$name-base" "$tpl" MODULE="$BENCH_BASELINE" "$@"
    fi
}

stop_gw() {
    stop_nginx "$1"
    stop_nginx "$1-base"
}

# ---------------------------------------------------------------- scenarios
# A scenario starts what it needs (ensure_mock, start_proxy, start_gateway,
# or start_nginx with its own template), checks it with sanity, runs
# compare, checks check_alive and stops its instances. compare leaves its
# ratios in CMP_TPUT_RATIO / CMP_P99_RATIO, which main collects.
# To add one (other backend types, 2 workers, streaming with another wrk
# script/body via LUA and BODY), write scenario_<name> and list it in
# BENCH_SCENARIOS.

# basic: non-streaming chat completion, ~20 KB request, ~1.3 KB response,
# one worker each, gateway with an openai_compatible backend.
scenario_basic() {
    ensure_mock
    start_proxy proxy 1
    start_gateway gateway 1
    sanity proxy_pass "$(url_of proxy)" proxy
    sanity gateway "$(url_of gateway)" gateway
    compare basic proxy_pass "$(url_of proxy)" gateway "$(url_of gateway)"
    check_alive mock proxy gateway
    stop_nginx proxy
    stop_gw gateway
}

# balanced: two workers on each side; the gateway balances over two
# backends (the same mock under two names) with least_outstanding, so every
# request pays for the shared-memory counters.
scenario_balanced() {
    ensure_mock
    start_proxy proxy2 2
    start_gateway gateway2 2 "$BENCH_DIR/gateway-balanced.conf.in"
    sanity proxy_pass "$(url_of proxy2)" proxy2
    sanity balanced "$(url_of gateway2)" gateway2
    compare balanced proxy_pass "$(url_of proxy2)" balanced "$(url_of gateway2)"
    check_alive mock proxy2 gateway2
    stop_nginx proxy2
    stop_gw gateway2
}

# ensure_redis: a private redis-server for the stateful run
ensure_redis() {
    [ -n "$REDIS_PID" ] && return 0
    command -v redis-server >/dev/null || die "redis-server not found"
    pick_port
    REDIS_PORT=$PICKED_PORT
    "${HARNESS[@]}" redis-server --port "$REDIS_PORT" \
        --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
        >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "redis-server did not start (see $WORK/redis.log)"
}

# ensure_cluster: three private redis-server primaries in one Redis
# Cluster (no replicas: the bench measures the path, not failures)
ensure_cluster() {
    [ ${#CLUSTER_PORTS[@]} -gt 0 ] && return 0
    local i p bus ok nodes=()
    for ((i = 0; i < 3; i++)); do
        # the cluster bus on a port of its own (port + 10000 may be taken)
        pick_port
        p=$PICKED_PORT
        pick_port
        bus=$PICKED_PORT
        mkdir -p "$WORK/cluster-$p"
        "${HARNESS[@]}" redis-server --port "$p" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-node-timeout 1000 \
            --cluster-port "$bus" \
            --cluster-config-file "$WORK/cluster-$p/nodes.conf" \
            --save '' --appendonly no --dir "$WORK/cluster-$p" \
            >"$WORK/cluster-$p.log" 2>&1 &
        CLUSTER_PIDS+=($!)
        CLUSTER_PORTS+=("$p")
        nodes+=("127.0.0.1:$p")
    done
    for p in "${CLUSTER_PORTS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            redis-cli -p "$p" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-yes \
        >"$WORK/cluster-create.log" 2>&1 \
        || die "redis-cli --cluster create failed (see $WORK/cluster-create.log)"
    for ((i = 0; i < 100; i++)); do
        ok=0
        for p in "${CLUSTER_PORTS[@]}"; do
            redis-cli -p "$p" cluster info 2>/dev/null \
                | grep -q '^cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" = 3 ] && return 0
        sleep 0.1
    done
    die "the Redis Cluster did not become ready"
}

# redis_calls [CMD...]: calls counted by INFO commandstats (all commands,
# those run inside scripts included, or only the ones named), summed over
# the cluster's primaries when the scenario runs on the cluster
redis_calls() {
    local want=" $* " p
    for p in ${REDIS_COUNTED:-$REDIS_PORT}; do
        redis-cli -p "$p" info commandstats
    done \
        | awk -F'[:=,]' -v w="$want" '/^cmdstat_/ {
              c = substr($1, 9)
              if (w == "  " || index(w, " " c " ")) s += $3
          } END { print s + 0 }'
}

# stateful: two workers each; every request carries one of 1000 session
# keys, all pinned in Redis by the warm-up, so each costs one round trip
# (a GETEX of the pin). proxy_pass gets the same header.
# stateful_hot: the same with model_gateway_session_cache 1s, so a hot
# session's pin is read from the node's cache, not from Redis.
# stateful_cluster: stateful on a three-primary Redis Cluster (the pins
# spread over the primaries, one connection to each per worker).
scenario_stateful() { stateful_run stateful 0; }
scenario_stateful_hot() { stateful_run stateful_hot 1s; }
scenario_stateful_cluster() { stateful_run stateful_cluster 0 cluster; }

# stateful_run LABEL CACHE_TIME [cluster]
stateful_run() {
    local tag=$1 cache=$2 lua_saved=$LUA calls0 calls1 trips0 trips1 reqs
    local cmds trips redis p
    ensure_mock
    if [ "${3:-}" = cluster ]; then
        ensure_cluster
        redis="model_gateway_redis_cluster"
        for p in "${CLUSTER_PORTS[@]}"; do
            redis+=" 127.0.0.1:$p"
        done
        REDIS_COUNTED="${CLUSTER_PORTS[*]}"
    else
        ensure_redis
        redis="model_gateway_redis 127.0.0.1:$REDIS_PORT"
        REDIS_COUNTED=""
    fi
    start_proxy proxy3 2
    start_gw gateway3 "$BENCH_DIR/gateway-stateful.conf.in" \
        MOCKPORT="${NGX_PORT[mock]}" WORKERS=2 \
        REDIS="$redis" SESSIONCACHE="$cache"
    sanity proxy_pass "$(url_of proxy3)" proxy3
    sanity "$tag" "$(url_of gateway3)" gateway3
    LUA=$BENCH_DIR/post-session.lua
    calls0=$(redis_calls)
    trips0=$(redis_calls getex evalsha eval)
    compare "$tag" proxy_pass "$(url_of proxy3)" "$tag" "$(url_of gateway3)"
    calls1=$(redis_calls)
    trips1=$(redis_calls getex evalsha eval)
    LUA=$lua_saved
    REDIS_COUNTED=""
    reqs=$({ cat "$WORK/$tag"-*-b.txt "$WORK/$tag"-*-base.txt \
                 2>/dev/null || true; } \
               | awk '/ requests in / { s += $1 } END { print s + 0 }')
    cmds=$(awk -v a="$calls0" -v b="$calls1" -v n="$reqs" \
        'BEGIN { if (n > 0) printf "%.3f", (b - a) / n; else print "n/a" }')
    trips=$(awk -v a="$trips0" -v b="$trips1" -v n="$reqs" \
        'BEGIN { if (n > 0) printf "%.3f", (b - a) / n; else print "n/a" }')
    echo "[$tag] redis round trips per gateway request: $trips;" \
         "commands per request (INFO commandstats, scripts' inner ones" \
         "included): $cmds ($reqs requests)"
    check_alive mock proxy3 gateway3
    stop_nginx proxy3
    stop_gw gateway3
}

# sanity_any LABEL URL NAME [BODY]: HTTP 200 is enough (a baseline that
# passes a provider's own format through)
sanity_any() {
    local label=$1 url=$2 name=$3 body=${4:-$BODY} code
    code=$(curl -sS --max-time 10 -o "$WORK/sanity-$label.out" \
        -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data-binary @"$body" "$url") \
        || { show_logs "$name"; die "sanity check of $label: curl failed"; }
    [ "$code" = 200 ] || { show_logs "$name"
        die "sanity check of $label ($url) failed: HTTP $code"; }
    log "sanity check of $label OK (HTTP 200)"
}

# anthropic: the gateway translates the ~20 KB OpenAI request to Anthropic
# Messages and the ~1 KB answer back; proxy_pass sends the same bytes to
# the same mock endpoint untranslated.  stream-anthropic: the answer is an
# Anthropic stream of ~25 events, translated event by event.
scenario_anthropic() {
    ensure_mock
    start_proxy proxy4 1
    start_gw gateway4 "$BENCH_DIR/gateway-anthropic.conf.in" \
        MOCKPORT="${NGX_PORT[mock]}" WORKERS=1
    sanity_any proxy_pass "http://127.0.0.1:${NGX_PORT[proxy4]}/anthropic/" proxy4
    sanity anthropic "$(url_of gateway4)" gateway4
    compare anthropic proxy_pass \
        "http://127.0.0.1:${NGX_PORT[proxy4]}/anthropic/" \
        anthropic "$(url_of gateway4)"
    check_alive mock proxy4 gateway4
    stop_nginx proxy4
    stop_gw gateway4
}

scenario_stream_anthropic() {
    local body_saved=$BODY
    ensure_mock
    BODY=$WORK/request-stream.json
    sed -e 's/"model":"gpt-4o-mini"/"model":"gpt-4o-mini-stream","stream":true/' \
        "$body_saved" >"$BODY"
    start_proxy proxy5 1
    start_gw gateway5 "$BENCH_DIR/gateway-anthropic.conf.in" \
        MOCKPORT="${NGX_PORT[mock]}" WORKERS=1
    sanity_any proxy_pass \
        "http://127.0.0.1:${NGX_PORT[proxy5]}/anthropic-stream/" proxy5
    sanity_any stream-anthropic "$(url_of gateway5)" gateway5
    grep -q 'chat.completion.chunk' "$WORK/sanity-stream-anthropic.out" \
        && grep -q '^data: \[DONE\]' "$WORK/sanity-stream-anthropic.out" \
        || die "stream-anthropic: no translated stream (see" \
               "$WORK/sanity-stream-anthropic.out)"
    compare stream-anthropic proxy_pass \
        "http://127.0.0.1:${NGX_PORT[proxy5]}/anthropic-stream/" \
        stream-anthropic "$(url_of gateway5)"
    check_alive mock proxy5 gateway5
    stop_nginx proxy5
    stop_gw gateway5
    BODY=$body_saved
}

# bedrock_run TAG N: the ~20 KB request for model gpt-4o-mini-TAG
# translated to Converse and back by gateway N, against proxy N sending the
# same bytes to the same mock with fixed headers to /TAG/
bedrock_run() {
    local tag=$1 n=$2 body_saved=$BODY
    ensure_mock
    BODY=$WORK/request-$tag.json
    sed -e "s/\"model\":\"gpt-4o-mini\"/\"model\":\"gpt-4o-mini-$tag\"/" \
        "$body_saved" >"$BODY"
    start_proxy "proxy$n" 1
    start_gw "gateway$n" "$BENCH_DIR/gateway-anthropic.conf.in" \
        MOCKPORT="${NGX_PORT[mock]}" WORKERS=1
    sanity_any proxy_pass "http://127.0.0.1:${NGX_PORT[proxy$n]}/$tag/" \
        "proxy$n"
    sanity "$tag" "$(url_of "gateway$n")" "gateway$n"
    compare "$tag" proxy_pass "http://127.0.0.1:${NGX_PORT[proxy$n]}/$tag/" \
        "$tag" "$(url_of "gateway$n")"
    check_alive mock "proxy$n" "gateway$n"
    stop_nginx "proxy$n"
    stop_gw "gateway$n"
    BODY=$body_saved
}

# bedrock: signed with SigV4 (a SHA-256 of the body and an HMAC chain per
# request)
scenario_bedrock() { bedrock_run bedrock 6; }

# bedrock_key: the same with a Bedrock API key (a bearer token): Converse
# translation both ways without SigV4, to tell the two costs apart
scenario_bedrock_key() { bedrock_run bedrock-key 7; }

# auth: every request carries a gateway key, made with bin/mg-key and kept
# in Redis; after the first request it is in the worker's key cache, so the
# figure is the cost of finding, hashing and checking a key. proxy_pass gets
# the same header. The baseline module (BENCH_BASELINE) is not run here: a
# build from before gateway keys would not load the configuration.
scenario_auth() {
    local key
    ensure_mock
    ensure_redis
    auth_run auth 9 "$BENCH_DIR/post.lua"
}

# auth_batch: auth with model_gateway_limit_batch 100: the node admits
# from its leases, and asks Redis about once per 100 requests
scenario_auth_batch() {
    ensure_mock
    ensure_redis
    auth_run auth_batch 12 "$BENCH_DIR/post.lua" 100
}

# stateful_auth: auth, and every request carries one of 1000 session keys
# (post-session.lua): the LIMIT script charges the limits and reads the pin
# in one round trip; the SETTLE script after each answer is not waited for
scenario_stateful_auth() {
    auth_run stateful_auth 10 "$BENCH_DIR/post-session.lua"
}

# auth_run LABEL N LUA [BATCH]: the auth runs, gateway$N against proxy$N
auth_run() {
    local label=$1 n=$2 lua_saved=$LUA key calls0 calls1 s0 s1 w0 w1 reqs
    local batch=${4:-1}
    ensure_mock
    ensure_redis
    key=$("$TOP/bin/mg-key" --tenant bench --id "bench-$n" \
              --rpm 1000000000 --tpm 1000000000000 \
              --redis "127.0.0.1:$REDIS_PORT" | head -n 1) \
        || die "bin/mg-key could not write the bench's key to Redis"
    start_proxy "proxy$n" 1
    start_nginx "gateway$n" "$BENCH_DIR/gateway-auth.conf.in" \
        MODULE="$MODULE" MOCKPORT="${NGX_PORT[mock]}" WORKERS=1 \
        REDISPORT="$REDIS_PORT" BATCH="$batch"
    BENCH_AUTH=$key
    export BENCH_AUTH
    sanity proxy_pass "$(url_of "proxy$n")" "proxy$n"
    sanity "$label" "$(url_of "gateway$n")" "gateway$n"
    LUA=$3
    calls0=$(redis_calls)
    s0=$(redis_calls evalsha eval)
    w0=$(redis_calls getex hgetall)
    compare "$label" proxy_pass "$(url_of "proxy$n")" "$label" \
        "$(url_of "gateway$n")"
    calls1=$(redis_calls)
    s1=$(redis_calls evalsha eval)
    w1=$(redis_calls getex hgetall)
    LUA=$lua_saved
    unset BENCH_AUTH
    reqs=$({ cat "$WORK"/"$label"-*-b.txt 2>/dev/null || true; } \
               | awk '/ requests in / { s += $1 } END { print s + 0 }')
    echo "[$label] per gateway request: scripts $(awk -v a="$s0" \
        -v b="$s1" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", \
        (b - a) / n; else print "n/a" }') (LIMIT, waited for, with the" \
         "session's pin; SETTLE after the answer, not waited for)," \
         "other round trips (GETEX, HGETALL) $(awk -v a="$w0" -v b="$w1" \
        -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; \
        else print "n/a" }'), commands inside scripts included" \
         "$(awk -v a="$calls0" -v b="$calls1" -v n="$reqs" 'BEGIN { \
        if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')" \
         "($reqs requests)"
    check_alive mock "proxy$n" "gateway$n"
    stop_nginx "proxy$n"
    stop_nginx "gateway$n"
}

# gen_chain DIR: what the responses_gateway run sends: input.txt (one
# turn's input, ~1 KB of plain text), first.json (a chain's first turn,
# for the sanity check) and turn-1.json .. turn-10.json, the Anthropic
# requests of a chain's turns (the history so far, with the mock's canned
# answer as every assistant turn, then the input), which proxy_pass sends
gen_chain() {
    local dir=$1
    mkdir -p "$dir"
    printf '%s\n' "We run a Postgres cluster for the orders service, about \
two terabytes, with one primary and two replicas in the same region. The new \
cluster is managed by the cloud provider and lives in a different VPC, peered \
with ours, with roughly one millisecond of extra latency. Our busiest hour \
sees around four thousand writes per second and twenty thousand reads per \
second, mostly point lookups by order id. Some reports run long analytical \
queries against the replicas at night, and they sometimes hold snapshots open \
for more than an hour. We cannot afford more than a few seconds of write \
unavailability, and the business wants the cutover done before the holiday \
freeze. What should the next step be, and what do we watch while we take it?" \
        >"$dir/input.txt"
    perl -MJSON::PP -e '
        my ($dir, $mock) = @ARGV;
        my $J = JSON::PP->new->canonical;
        local $/;
        open my $f, "<", "$dir/input.txt" or die $!;
        (my $in = <$f>) =~ s/\n\z//;
        open $f, "<", $mock or die $!;
        my $conf = <$f>;
        my ($answer) = $conf =~ m{location = /anthropic/v1/messages.*?return 200 \x27(.*?)\x27;}s
            or die "no canned Anthropic answer in $mock\n";
        my $text = $J->decode($answer)->{content}[0]{text};
        open $f, ">", "$dir/first.json" or die $!;
        print $f $J->encode({ model => "gpt-4o-mini", input => $in });
        for my $k (1 .. 10) {
            my @m;
            push @m, { role => "user", content => $in },
                     { role => "assistant", content => $text } for 2 .. $k;
            push @m, { role => "user", content => $in };
            open $f, ">", "$dir/turn-$k.json" or die $!;
            print $f $J->encode({ model => "claude-3-5-sonnet-20241022",
                                  max_tokens => 4096, messages => \@m });
        }' "$dir" "$BENCH_DIR/mock.conf.in" \
        || die "could not write the chain's requests into $dir"
}

# responses_gateway: 10-turn Responses chains held by the gateway over the
# Anthropic mock, every request with a gateway key (cached by the worker)
# and limits; proxy_pass sends the mock the 10 requests the gateway sends
# for a chain's turns, in turn, holding nothing.  Reports the Redis round
# trips per gateway request.
scenario_responses_gateway() {
    local lua_saved=$LUA key s0 s1 c0 c1 reqs gw px code
    ensure_mock
    ensure_redis
    gen_chain "$WORK/chain"
    key=$("$TOP/bin/mg-key" --tenant bench --id bench-chain \
              --rpm 1000000000 --tpm 1000000000000 \
              --redis "127.0.0.1:$REDIS_PORT" | head -n 1) \
        || die "bin/mg-key could not write the bench's key to Redis"
    start_proxy proxy11 1
    start_gw gateway11 "$BENCH_DIR/gateway-responses.conf.in" \
        MOCKPORT="${NGX_PORT[mock]}" WORKERS=1 REDISPORT="$REDIS_PORT"
    px="http://127.0.0.1:${NGX_PORT[proxy11]}/anthropic/"
    gw="http://127.0.0.1:${NGX_PORT[gateway11]}/v1/responses"
    sanity_any proxy_pass "$px" proxy11 "$WORK/chain/turn-10.json"
    code=$(curl -sS --max-time 10 -o "$WORK/sanity-responses.json" \
        -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $key" \
        --data-binary @"$WORK/chain/first.json" "$gw") || code=000
    if [ "$code" != 200 ] || ! grep -qF '"resp_mgw_' \
            "$WORK/sanity-responses.json"; then
        show_logs gateway11
        die "sanity check of responses_gateway ($gw) failed: HTTP $code"
    fi
    log "sanity check of responses_gateway OK (HTTP 200)"
    BENCH_AUTH=$key
    BENCH_CHAIN_DIR=$WORK/chain
    export BENCH_AUTH BENCH_CHAIN_DIR
    LUA=$BENCH_DIR/post-chain.lua
    s0=$(redis_calls evalsha eval)
    c0=$(redis_calls)
    compare responses_gateway proxy_pass "$px" responses_gateway "$gw"
    s1=$(redis_calls evalsha eval)
    c1=$(redis_calls)
    LUA=$lua_saved
    unset BENCH_AUTH BENCH_CHAIN_DIR
    reqs=$({ cat "$WORK"/responses_gateway-*-b.txt \
                 "$WORK"/responses_gateway-*-base.txt 2>/dev/null || true; } \
               | awk '/ requests in / { s += $1 } END { print s + 0 }')
    echo "[responses_gateway] per gateway request: redis scripts" \
         "$(awk -v a="$s0" -v b="$s1" -v n="$reqs" 'BEGIN { if (n > 0) \
        printf "%.2f", (b - a) / n; else print "n/a" }') (LIMIT with the" \
         "cached key's limits, MREAD of the chain from the second turn on," \
         "MWRITE of the turn; SETTLE batched, not waited for), commands" \
         "inside scripts included $(awk -v a="$c0" -v b="$c1" -v n="$reqs" \
        'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')" \
         "($reqs requests)"
    check_alive mock proxy11 gateway11
    stop_nginx proxy11
    stop_gw gateway11
}

# ---------------------------------------------------------------- main

[ $# -eq 1 ] || die "usage: $0 /abs/path/to/ngx_http_model_gateway_module.so"
MODULE=$1
for v in BENCH_SECONDS BENCH_ROUNDS BENCH_CONNECTIONS BENCH_WARMUP \
         BENCH_MAX_ERRORS; do
    is_uint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
for v in BENCH_SECONDS BENCH_ROUNDS BENCH_CONNECTIONS BENCH_WARMUP; do
    [ "${!v}" -ge 1 ] || die "$v must be >= 1"
done
command -v "$WRK" >/dev/null || die "wrk not found (apt-get install wrk)"
command -v curl >/dev/null || die "curl not found"
command -v ss >/dev/null || die "ss not found (iproute2)"
[ -x "$NGINX" ] || die "nginx binary $NGINX not found or not executable"
if [ -n "$BENCH_BASELINE" ]; then
    [ -f "$BENCH_BASELINE" ] || die "baseline module $BENCH_BASELINE not found"
    BENCH_BASELINE=$(cd "$(dirname "$BENCH_BASELINE")" && pwd)/$(basename "$BENCH_BASELINE")
fi
if [ "$BENCH_FAKE_GATEWAY" != 1 ]; then
    [ -f "$MODULE" ] || die "module $MODULE not found (run make build, or" \
        "BENCH_FAKE_GATEWAY=1 to test the harness without it)"
    MODULE=$(cd "$(dirname "$MODULE")" && pwd)/$(basename "$MODULE")
fi

mkdir -p "$TOP/build/bench"
WORK=$TOP/build/bench/run-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$WORK/tmp"
ln -sfn "$(basename "$WORK")" "$TOP/build/bench/last"
# keep the last 5 runs
find "$TOP/build/bench" -mindepth 1 -maxdepth 1 -type d -name 'run-*' \
    | sort | head -n -5 | while read -r old; do rm -rf -- "$old"; done
printf 'sk-bench\n' >"$WORK/key"
chmod 600 "$WORK/key"
printf '[default]\naws_access_key_id = AKIDBENCH\naws_secret_access_key = %s\n' \
    'benchSecretKey/EXAMPLE+0123456789' >"$WORK/aws-credentials"
chmod 600 "$WORK/aws-credentials"
BODY=$WORK/request.json
gen_body "$BODY"
printf 'scenario\tproxy_best_rps\tproxy_median_p99_ms\tgateway_best_rps\tgateway_median_p99_ms\ttput_ratio\tp99_ratio\tcpu_ratio\tcpu_bound\n' \
    >"$WORK/results.tsv"

log "work dir $WORK; request body $(wc -c <"$BODY") bytes"
log "wrk -t1 -c$BENCH_CONNECTIONS, ${BENCH_SECONDS}s x $BENCH_ROUNDS rounds per target"
if [ "$BENCH_FAKE_GATEWAY" = 1 ]; then
    log "BENCH_FAKE_GATEWAY=1: measuring proxy_pass against itself"
fi

if [ "$PIN" = 1 ]; then
    log "front ends pinned to CPU $BENCH_FRONT_CPU; wrk, mock and redis to" \
        "CPU $BENCH_HARNESS_CPU"
else
    log "WARNING: not pinned (one CPU, or no taskset): CPU per request is" \
        "still measured, throughput ratios are less meaningful"
fi

first=""
declare -A SC_TPUT=() SC_P99=() SC_CPU=() SC_BOUND=() SC_SPREAD=() SC_BASE=()
for sc in $BENCH_SCENARIOS; do
    declare -F "scenario_$sc" >/dev/null || die "unknown scenario '$sc'"
    log "scenario $sc"
    "scenario_$sc"
    SC_TPUT[$sc]=$CMP_TPUT_RATIO
    SC_P99[$sc]=$CMP_P99_RATIO
    SC_CPU[$sc]=$CMP_CPU_RATIO
    SC_BOUND[$sc]=$CMP_BOUND
    SC_SPREAD[$sc]="throughput $CMP_TPUT_SPREAD, cpu per request $CMP_CPU_SPREAD, p99 $CMP_P99_SPREAD"
    SC_BASE[$sc]=$CMP_BASE_CPU_RATIO
    first=${first:-$sc}
done
cleanup

# the first scenario is "gateway"; its figures come last
for sc in $(printf '%s\n' $BENCH_SCENARIOS | grep -vx "$first") "$first"; do
    name=${sc//_/-}
    [ "$sc" = "$first" ] && name=gateway
    echo "$name/proxy_pass spread over $BENCH_ROUNDS rounds: ${SC_SPREAD[$sc]}"
    if [ "${SC_BOUND[$sc]}" != 1 ]; then
        echo "$name/proxy_pass: a front end was under 90% busy, so the" \
             "throughput ratio measured the harness; use CPU per request"
    fi
    [ -z "${SC_BASE[$sc]}" ] \
        || echo "$name/baseline cpu per request ratio: ${SC_BASE[$sc]}"
    echo "$name/proxy_pass cpu per request ratio: ${SC_CPU[$sc]}"
    echo "$name/proxy_pass throughput ratio: ${SC_TPUT[$sc]}"
    [ "$sc" = "$first" ] || continue
    echo "$name/proxy_pass p99 latency ratio: ${SC_P99[$sc]}"
done
