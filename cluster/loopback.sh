#!/usr/bin/env bash
# A three-node cluster of local processes on loopback, for benchmarks (BENCHMARKS.md) and
# trying things out without Docker.
#
#   cluster/loopback.sh start [--binary PATH]   fresh data in target/loopback/, nodes 1-3
#   cluster/loopback.sh stop                    SIGTERM all three, wait for them
#   cluster/loopback.sh rss                     peak RSS (VmHWM) of each running node, in MiB
#   cluster/loopback.sh cpu                     CPU seconds (user + system) each node has used
#   cluster/loopback.sh learner                 snapshot on node 1, then add a fresh node 4 as a
#                                               learner: prints the time it took to catch up and
#                                               node 4's peak RSS, checks its digest, removes it
#
# Client gRPC on 127.0.0.1:50051, 50061, 50071; peers on 50052, 50062, 50072; HTTP on 8081-8083.
# Tokens: target/loopback/keeper.token and writer.token. Default binary: target/release/linkreg.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
dir="$repo/target/loopback"
binary="$repo/target/release/linkreg"
command=${1:-}
shift || true
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary=$2; shift ;;
    *) echo "loopback: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

pids() { cat "$dir"/n*/pid 2>/dev/null || true; }

case "$command" in
start)
    [ -x "$binary" ] || { echo "loopback: no binary at $binary (cargo build --release --locked --bin linkreg)" >&2; exit 1; }
    "$0" stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    mkdir -p "$dir"
    "$binary" callers add Operations --cbe 0123456749 --role keeper --file "$dir/callers.toml" >"$dir/keeper.token" 2>/dev/null
    "$binary" callers add Bench --cbe 0203201340 --role writer --file "$dir/callers.toml" >"$dir/writer.token" 2>/dev/null
    for n in 1 2 3; do
        mkdir -p "$dir/n$n"
        role=(--join 127.0.0.1:50052)
        [ "$n" = 1 ] && role=(--init)
        client=$((50041 + 10 * n))
        "$binary" serve --id "$n" --data-dir "$dir/n$n/data" --callers "$dir/callers.toml" \
            --client-addr "127.0.0.1:$client" --peer-addr "127.0.0.1:$((client + 1))" \
            --http-addr "127.0.0.1:808$n" "${role[@]}" >"$dir/n$n/log" 2>&1 &
        echo $! >"$dir/n$n/pid"
        # Each joins through node 1 once it is there.
        for _ in $(seq 1 100); do
            if LINKREG_TOKEN=$(cat "$dir/keeper.token") "$binary" cluster status --server "127.0.0.1:$client" --json 2>/dev/null |
                grep -q '"leader_id":[0-9]'; then
                break
            fi
            sleep 0.2
        done
    done
    LINKREG_TOKEN=$(cat "$dir/keeper.token") "$binary" cluster status --server 127.0.0.1:50051
    ;;
stop)
    for pid in $(pids); do kill "$pid" 2>/dev/null || true; done
    for pid in $(pids); do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    rm -f "$dir"/n*/pid
    ;;
rss)
    for n in 1 2 3; do
        pid=$(cat "$dir/n$n/pid" 2>/dev/null || true)
        [ -n "$pid" ] || continue
        awk -v n="$n" '/VmHWM/ { printf "node %s peak RSS %.0f MiB\n", n, $2 / 1024 }' "/proc/$pid/status"
    done
    ;;
learner)
    keeper=$(cat "$dir/keeper.token")
    admin() { LINKREG_TOKEN=$keeper "$binary" cluster "$@" --server 127.0.0.1:50051; }
    rm -rf "$dir/n4"
    mkdir -p "$dir/n4"
    # Neither --init nor --join: it waits to be added, so the catch-up is all that is timed.
    "$binary" serve --id 4 --data-dir "$dir/n4/data" --callers "$dir/callers.toml" \
        --client-addr 127.0.0.1:50081 --peer-addr 127.0.0.1:50082 \
        --http-addr 127.0.0.1:8084 >"$dir/n4/log" 2>&1 &
    echo $! >"$dir/n4/pid"
    started=$(date +%s.%N)
    admin snapshot >/dev/null || true   # returns after a minute at most; the build goes on
    until admin status --json | grep -q '"snapshot_index":[0-9]'; do sleep 1; done
    echo "snapshot built in $(echo "$(date +%s.%N) - $started" | bc) s"
    started=$(date +%s.%N)
    admin add-learner --id 4 --addr 127.0.0.1:50082 --client-addr 127.0.0.1:50081 \
        --http-addr 127.0.0.1:8084 >/dev/null
    echo "learner caught up in $(echo "$(date +%s.%N) - $started" | bc) s"
    awk '/VmHWM/ { printf "node 4 peak RSS %.0f MiB\n", $2 / 1024 }' "/proc/$(cat "$dir/n4/pid")/status"
    du -sh "$dir/n4/data" | awk '{ print "node 4 data " $1 }'
    d1=$(LINKREG_TOKEN=$keeper "$binary" cluster digest --server 127.0.0.1:50051 --json)
    d4=$(LINKREG_TOKEN=$keeper "$binary" cluster digest --server 127.0.0.1:50081 --json)
    sha() { sed 's/.*"sha256":"\([0-9a-f]*\)".*/\1/'; }
    if [ "$(echo "$d1" | sha)" = "$(echo "$d4" | sha)" ]; then echo "digests equal"; else
        echo "digests differ: $d1 / $d4" >&2; fi
    admin remove --id 4 >/dev/null
    kill "$(cat "$dir/n4/pid")"
    rm -f "$dir/n4/pid"
    ;;
cpu)
    # Fields 14 and 15 of /proc/PID/stat, in clock ticks. The command name (field 2) holds no
    # spaces here, so plain field splitting is safe.
    ticks=$(getconf CLK_TCK)
    for n in 1 2 3; do
        pid=$(cat "$dir/n$n/pid" 2>/dev/null || true)
        [ -n "$pid" ] || continue
        awk -v n="$n" -v t="$ticks" '{ printf "node %s cpu %.2f s\n", n, ($14 + $15) / t }' "/proc/$pid/stat"
    done
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
    ;;
esac
