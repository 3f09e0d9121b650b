#!/usr/bin/env bash
# Runs the BENCHMARKS.md load figures: the hub pinned to core 0, the load generator to core 1,
# everything on 127.0.0.1, every run bounded. Prints each scenario's summary table.
#
#   loadtest/bench.sh            # all scenarios except the 10-minute churn (about 3 minutes)
#   loadtest/bench.sh churn      # the 10-minute churn run
#   loadtest/bench.sh history    # the cost of channel history: off/on, alternated, 3 rounds
#   HUB_BIN=/path/to/other/mt-stream loadtest/bench.sh idle   # compare another build
#   loadtest/bench.sh spike      # RSS after a 5000-client spike, with glibc malloc tunings
#   loadtest/bench.sh auth       # connect + token verification cost: no key, HS256, ES256
#   loadtest/bench.sh cluster    # one Redis vs a 3-primary Redis Cluster (publishes/s, CPU per
#       delivery), and the longest delivery gap when a cluster primary is killed (kill -9)
#   loadtest/bench.sh floor      # mt-stream against the floor (one blocking write() per delivery,
#       loadtest/src/bin/floor.rs) at 10/20/50/100/300 events/s, alternated (FLOOR_ROUNDS, 2)
#   loadtest/bench.sh syscalls   # syscalls per delivery of the floor and the hub (strace -c)
#   loadtest/bench.sh webhook    # GitHub webhook deliveries answered (published), one at a time,
#       embedded broker and Redis, bodies of 1 / 41 / 401 KB (loadtest/webhook_latency.py)
#   BEFORE_BIN=/path/to/old/mt-stream loadtest/bench.sh compare   # old vs this build, steady
#       1000 clients x 100 events/s, alternated 3 rounds, for before/after ratios from one run
#       (COMPARE_SOURCE=redis: through one redis-server, with history)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The same build as `cargo build --release --workspace --bins --benches` (features unified the
# same way, so one build serves the benches and this script).
cargo build --release --locked --workspace --bins --benches >&2
HUB_BIN="${HUB_BIN:-$ROOT/target/release/mt-stream}"
LOAD="$ROOT/target/release/loadtest"
FLOOR_BIN="$ROOT/target/release/floor"
TOKEN=loadtest-token-0123456789
PUBLIC=127.0.0.1:18080
ADMIN=127.0.0.1:19090
REDIS_PORT=16399
HUB_PID=""
REDIS_PID=""

stop_hub() {
  if [[ -n "$HUB_PID" ]]; then kill "$HUB_PID" 2>/dev/null || true; wait "$HUB_PID" 2>/dev/null || true; HUB_PID=""; fi
}
cleanup() {
  stop_hub
  if [[ -n "$REDIS_PID" ]]; then kill "$REDIS_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# start_hub [ENV=VALUE ...]: a fresh hub for each scenario, so memory figures start clean.
start_hub() {
  stop_hub
  env MT_LISTEN=$PUBLIC MT_ADMIN_LISTEN=$ADMIN MT_PUBLISH_TOKEN=$TOKEN RUST_LOG=warn "$@" \
    taskset -c 0 "$HUB_BIN" serve >/dev/null 2>&1 &
  HUB_PID=$!
  wait_ready "the hub"
}

# start_floor: the floor reference server in place of the hub, pinned and polled the same way.
start_floor() {
  stop_hub
  taskset -c 0 "$FLOOR_BIN" --listen $PUBLIC --admin $ADMIN >/dev/null 2>&1 &
  HUB_PID=$!
  wait_ready "the floor"
}

# wait_ready NAME: until the server just started as $HUB_PID answers /readyz (at most 10 s).
wait_ready() {
  for _ in $(seq 1 100); do
    # Ours must be the one answering (not another process on the same ports).
    kill -0 "$HUB_PID" 2>/dev/null || { echo "$1 exited: are $PUBLIC or $ADMIN taken?" >&2; exit 1; }
    if curl -sf "http://$ADMIN/readyz" >/dev/null; then return; fi
    sleep 0.1
  done
  echo "$1 did not become ready" >&2
  exit 1
}

# row NAME: one line from a `loadtest --json` summary on stdin.
row() {
  jq -r --arg name "$1" '"\($name): \(.rate_per_second) ev/s, \(.deliveries) deliveries, CPU per delivery \(.hub.cpu_us_per_delivery * 100 | round / 100) us, p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, lost \(.lost), RSS peak \(.hub.rss_peak_mib * 10 | round / 10) MiB"'
}

start_redis() {
  if [[ -z "$REDIS_PID" ]]; then
    redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    REDIS_PID=$!
    for _ in $(seq 1 50); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "redis-server did not start" >&2
    exit 1
  fi
}

load() {
  echo "## loadtest $*"
  taskset -c 1 "$LOAD" "$@" --hub $PUBLIC --admin $ADMIN --token $TOKEN --hub-pid "$HUB_PID" 2>/dev/null
  echo
}

metrics_batching() {
  local d f
  d=$(curl -s "http://$ADMIN/metrics" | awk '/^mt_stream_deliveries_total/ {print $2}')
  f=$(curl -s "http://$ADMIN/metrics" | awk '/^mt_stream_flushes_total/ {print $2}')
  echo "frames per flush (deliveries_total / flushes_total): $(awk -v d="$d" -v f="$f" 'BEGIN { printf "%.2f", d / f }')"
  echo
}

case "${1:-all}" in
  churn)
    start_hub
    load churn --clients 1000 --channels 10 --rate 100 --duration 600 --churn-max-ms 2000
    ;;
  idle)
    for n in 1000 5000 10000; do start_hub MT_MAX_CONNECTIONS=10000 MT_MEMORY_LIMIT=8Gi; load idle --clients $n --duration 5; done
    ;;
  all)
    for n in 1000 5000 10000; do start_hub MT_MAX_CONNECTIONS=10000 MT_MEMORY_LIMIT=8Gi; load idle --clients $n --duration 5; done
    for rate in 10 100 300 600; do start_hub; load steady --clients 1000 --rate $rate --size 256 --duration 10; metrics_batching; done
    for n in 5000 10000; do
      start_hub MT_MAX_CONNECTIONS=10000 MT_MEMORY_LIMIT=8Gi
      load steady --clients $n --rate $((300000 / n)) --size 256 --duration 10
    done
    start_hub; load steady --clients 900 --rate 500 --size 1024 --duration 10
    start_hub; load slow --clients 1000 --rate 500 --size 1024 --duration 10 --slow-fraction 0.1
    start_hub; load ramp --clients 1000 --rate 10 --ramp-factor 1.5 --duration 5 --p99-bound-ms 20 || true
    start_hub; load reconnect --clients 1000 --channels 10
    start_redis
    start_hub REDIS_URL=redis://127.0.0.1:$REDIS_PORT
    load steady --clients 1000 --channels 100 --rate 20000 --size 256 --duration 10 --redis-url redis://127.0.0.1:$REDIS_PORT
    metrics_batching
    ;;
  auth)
    # What a token costs at connect time: 1000 clients connecting 100 at a time to a hub with no
    # key (no check), with an HMAC secret (HS256 tokens) and with a JWKS of one EC key (ES256),
    # each client giving ?token=; alternated 3 rounds. Tokens minted by `mt-stream token`.
    secret=loadtest-hmac-secret-0123456789abcdef
    keys="$(mktemp -d)"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/ec.pem" 2>/dev/null
    b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
    point="$keys/point"
    openssl pkey -in "$keys/ec.pem" -pubout -outform DER 2>/dev/null | tail -c 64 >"$point"
    x=$(head -c 32 "$point" | b64url); y=$(tail -c 32 "$point" | b64url)
    echo "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"lt1\",\"x\":\"$x\",\"y\":\"$y\"}]}" >"$keys/keys.jwks"
    hs=$(MT_AUTH_HMAC_SECRET=$secret "$HUB_BIN" token --sub loadtest --channels 'lt*' --ttl 1h)
    es=$("$HUB_BIN" token --sub loadtest --channels 'lt*' --ttl 1h --key-file "$keys/ec.pem" --kid lt1)
    for round in 1 2 3; do
      echo "### round $round: no key"
      start_hub; load idle --clients 1000 --duration 1 | grep -E "connect|failed"
      echo "### round $round: HS256"
      start_hub MT_AUTH_HMAC_SECRET=$secret; load idle --clients 1000 --duration 1 --auth-token "$hs" | grep -E "connect|failed"
      echo "### round $round: ES256"
      start_hub MT_AUTH_PUBLIC_KEYS_FILE="$keys/keys.jwks"; load idle --clients 1000 --duration 1 --auth-token "$es" | grep -E "connect|failed"
    done
    rm -rf "$keys"
    ;;
  spike)
    # What RSS comes back to after a spike of 5000 clients (10 s at 60 events/s of 1 KiB, then
    # all gone), with glibc's defaults, with fewer arenas / a trim threshold, and with jemalloc
    # or mimalloc preloaded (Debian's libjemalloc2 / libmimalloc2.0) with their purge delays.
    lib=/usr/lib/x86_64-linux-gnu
    for variant in ${SPIKE_VARIANTS:-default arenas2 arenas2-trim jemalloc mimalloc}; do
      case $variant in
        default) tune=() ;;
        arenas2) tune=(MALLOC_ARENA_MAX=2) ;;
        arenas2-trim) tune=(MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=131072) ;;
        jemalloc) tune=(LD_PRELOAD=$lib/libjemalloc.so.2 MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0) ;;
        mimalloc) tune=(LD_PRELOAD=$lib/libmimalloc.so.2 MIMALLOC_PURGE_DELAY=100) ;;
        *) echo "unknown variant $variant" >&2; exit 1 ;;
      esac
      start_hub MT_MAX_CONNECTIONS=10000 MT_MEMORY_LIMIT=8Gi "${tune[@]}"
      idle=$(awk '/^VmRSS/ {print $2}' "/proc/$HUB_PID/status")
      load steady --clients 5000 --rate 60 --size 1024 --duration 10 | grep -E "RSS|lost|failed|deliveries"
      for _ in $(seq 1 100); do
        [[ $(curl -s "http://$ADMIN/metrics" | awk '/^mt_stream_connections / {print $2}') == 0 ]] && break
        sleep 0.1
      done
      sleep 5
      after=$(awk '/^VmRSS/ {print $2}' "/proc/$HUB_PID/status")
      echo "spike $variant: RSS idle before ${idle} KiB, 5 s after every client left ${after} KiB"
      echo
    done
    ;;
  compare)
    : "${BEFORE_BIN:?set BEFORE_BIN to the mt-stream binary of the other build}"
    AFTER_BIN=$HUB_BIN
    # COMPARE_SOURCE=redis: through one redis-server, the channel kept (the history script).
    source_env=(); source_flags=()
    if [[ ${COMPARE_SOURCE:-embedded} == redis ]]; then
      start_redis
      source_env=(REDIS_URL=redis://127.0.0.1:$REDIS_PORT)
      source_flags=(--redis-url redis://127.0.0.1:$REDIS_PORT --history)
    fi
    for round in 1 2 3; do
      for side in before after; do
        if [[ $side == before ]]; then HUB_BIN=$BEFORE_BIN; else HUB_BIN=$AFTER_BIN; fi
        echo "### round $round, $side: $HUB_BIN"
        start_hub "${source_env[@]}"
        load steady --clients 1000 --rate 100 --size 256 --duration 10 "${source_flags[@]}"
      done
    done
    ;;
  floor)
    # 1000 clients on one channel, 256 B events published over HTTP, 10 s per run; the floor and
    # the hub alternated so drift on this noisy machine hits both alike.
    # BEFORE_BIN=/path/to/old/mt-stream adds that build to each round, for before/after ratios.
    AFTER_BIN=$HUB_BIN
    servers=(floor mt-stream)
    [[ -n ${BEFORE_BIN:-} ]] && servers=(floor before mt-stream)
    for rate in ${FLOOR_RATES:-10 20 50 100 300}; do
      for round in $(seq 1 "${FLOOR_ROUNDS:-2}"); do
        for server in "${servers[@]}"; do
          case $server in
            floor) start_floor ;;
            before) HUB_BIN=$BEFORE_BIN start_hub ;;
            *) HUB_BIN=$AFTER_BIN start_hub ;;
          esac
          taskset -c 1 "$LOAD" steady --clients 1000 --rate "$rate" --size 256 --duration 10 --json \
            --hub $PUBLIC --admin $ADMIN --token $TOKEN --hub-pid "$HUB_PID" 2>/dev/null | row "round $round $server"
        done
      done
    done
    ;;
  syscalls)
    # Every syscall of the server's threads during a 10 s run (strace -c -f attached after the
    # clients connected is not possible from here, so connecting is counted too: 1000 accepts
    # and their handshakes, the same for both). strace slows the server; counts, not times.
    for rate in ${SYSCALL_RATES:-20 100}; do
      for server in floor mt-stream; do
        if [[ $server == floor ]]; then start_floor; else start_hub; fi
        trace="$(mktemp)"
        strace -c -f -q -o "$trace" -p "$HUB_PID" &
        tracer=$!
        sleep 0.5
        taskset -c 1 "$LOAD" steady --clients 1000 --rate "$rate" --size 256 --duration 10 --json \
          --hub $PUBLIC --admin $ADMIN --token $TOKEN --hub-pid "$HUB_PID" 2>/dev/null >"$trace.json"
        deliveries=$(jq .deliveries "$trace.json")
        row "$server" <"$trace.json"
        kill -INT $tracer; wait $tracer 2>/dev/null || true
        awk -v d="$deliveries" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ { printf "  %-16s %9d calls  %.3f per delivery\n", $NF, $4, $4 / d }
          $NF == "total" { printf "  %-16s %9d calls  %.3f per delivery\n", "total", $4, $4 / d }' "$trace" | sort -k2 -n -r | head -12
        rm -f "$trace" "$trace.json"
      done
    done
    ;;
  webhook)
    start_redis
    for source in embedded redis; do
      if [[ $source == redis ]]; then extra=(REDIS_URL=redis://127.0.0.1:$REDIS_PORT); else extra=(); fi
      start_hub "${extra[@]}" MT_GITHUB_WEBHOOK_SECRET="It's a Secret to Everybody"
      for padding in 0 40000 400000; do
        echo "$source: $(taskset -c 1 python3 loadtest/webhook_latency.py $PUBLIC ${WEBHOOK_COUNT:-1000} $padding)"
      done
    done
    ;;
  history)
    # Off: no channel keeps history, plain PUBLISH. On: every channel kept, the publish script
    # (XADD + PUBLISH). Alternated so drift on this noisy machine hits both sides alike.
    start_redis
    url=redis://127.0.0.1:$REDIS_PORT
    sha=$(redis-cli -p $REDIS_PORT SCRIPT LOAD "$(cat scripts/publish.lua)")
    payload=$(head -c 256 /dev/zero | tr '\0' x)
    for round in 1 2 3; do
      echo "### round $round: Redis alone, 200k publishes pipelined 16 deep (redis-benchmark on core 1)"
      redis-cli -p $REDIS_PORT flushall >/dev/null
      taskset -c 1 redis-benchmark -p $REDIS_PORT -n 200000 -P 16 -q PUBLISH mt:rb "$payload"
      taskset -c 1 redis-benchmark -p $REDIS_PORT -n 200000 -P 16 -q EVALSHA "$sha" 1 mt:rb "$payload" 1000 3600000
      for mode in off on; do
        redis-cli -p $REDIS_PORT flushall >/dev/null
        if [[ $mode == off ]]; then off=(MT_HISTORY_CHANNELS=); flag=(); else off=(); flag=(--history); fi
        echo "### round $round, history $mode"
        start_hub REDIS_URL=$url "${off[@]}"
        load steady --clients 1000 --rate 100 --size 256 --duration 10 --redis-url $url "${flag[@]}"
        start_hub REDIS_URL=$url "${off[@]}"
        load steady --clients 1000 --channels 100 --rate 5000 --size 256 --duration 10 --redis-url $url "${flag[@]}"
        echo "redis used_memory after: $(redis-cli -p $REDIS_PORT info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')"
        # Embedded broker: in-memory history on or off.
        start_hub "${off[@]}"
        load steady --clients 1000 --channels 100 --rate 5000 --size 256 --duration 10
      done
    done
    echo "### resume: 1000 clients on 10 channels come back with since=0-0 to 1000 kept events each"
    redis-cli -p $REDIS_PORT flushall >/dev/null
    start_hub REDIS_URL=$url
    load resume --clients 1000 --channels 10 --rate 2000 --size 256 --duration 5 --redis-url $url --history
    start_hub
    load resume --clients 1000 --channels 10 --rate 2000 --size 256 --duration 5
    ;;
  cluster)
    # Six redis-servers (3 primaries, 3 replicas) on 17101..17106, as the tests start them.
    CLUSTER_DIR="$(mktemp -d)"
    cluster_ports=(17101 17102 17103 17104 17105 17106)
    for port in "${cluster_ports[@]}"; do
      mkdir -p "$CLUSTER_DIR/$port"
      redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$CLUSTER_DIR/$port" --cluster-enabled yes \
        --cluster-node-timeout 2000 --repl-diskless-sync-delay 0 --appendonly yes --daemonize yes --logfile "$CLUSTER_DIR/$port.log"
    done
    stop_cluster() {
      for port in "${cluster_ports[@]}"; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
      rm -rf "$CLUSTER_DIR"
    }
    trap 'stop_cluster; cleanup' EXIT
    for _ in $(seq 1 50); do redis-cli -p 17106 ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
    for _ in $(seq 1 100); do
      ok=0
      for port in "${cluster_ports[@]}"; do redis-cli -p "$port" cluster info | grep -q cluster_state:ok && ok=$((ok + 1)); done
      [[ $ok == 6 ]] && break
      sleep 0.2
    done
    cluster_url="redis-cluster://127.0.0.1:17101?node=127.0.0.1:17102&node=127.0.0.1:17103"
    start_redis
    single_url=redis://127.0.0.1:$REDIS_PORT
    for round in $(seq 1 "${CLUSTER_ROUNDS:-2}"); do
      for url in "$single_url" "$cluster_url"; do
        echo "### round $round: $url"
        start_hub REDIS_URL="$url"
        load steady --clients 1000 --channels 100 --rate 20000 --size 256 --duration 10 --redis-url "$url" --history
      done
    done
    # A primary killed with SIGKILL 5 s into a 20 s run at 1000 events/s over 100 channels
    # (10 a second per channel): the longest silence on one channel is the time from the kill
    # to that channel's first event delivered again (plus up to 100 ms between its events).
    primary=$(redis-cli -p 17101 cluster nodes | awk '/master/ && !/fail/ {split($2, a, "[:@]"); print a[2]; exit}')
    echo "### failover: kill -9 of the primary on port $primary after 5 s"
    start_hub REDIS_URL="$cluster_url"
    ( sleep 5; kill -9 "$(redis-cli -p "$primary" info server | awk -F: '/^process_id:/ {print $2}' | tr -d '\r')" ) &
    killer=$!
    # Bounded: a publisher stuck on the dead primary must not hold the script.
    timeout 120 taskset -c 1 "$LOAD" steady --clients 1000 --channels 100 --rate 1000 --size 256 --duration 20 \
      --redis-url "$cluster_url" --history --hub $PUBLIC --admin $ADMIN --token $TOKEN --hub-pid "$HUB_PID" 2>/dev/null \
      || echo "the failover run did not finish within 120 s"
    wait "$killer"
    stop_hub
    stop_cluster
    ;;
  *)
    echo "usage: $0 [all|idle|churn|history|spike|auth|cluster|compare|floor|syscalls|webhook]" >&2
    exit 2
    ;;
esac
