#!/usr/bin/env bash
# A three-node cluster of local processes on loopback, for benchmarks (BENCHMARKS.md) and
# trying things out without Docker.
#
#   cluster/loopback.sh start [--binary PATH]   fresh data in target/loopback/, nodes 1-3
#   cluster/loopback.sh stop                    SIGTERM all three, wait for them
#   cluster/loopback.sh rss                     peak RSS (VmHWM) of each running node, in MiB
#   cluster/loopback.sh cpu                     CPU seconds (user + system) each node has used
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
