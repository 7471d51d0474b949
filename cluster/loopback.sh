#!/usr/bin/env bash
# A three-node cluster of local processes on loopback, for benchmarks (BENCHMARKS.md) and
# trying things out without Docker.
#
#   cluster/loopback.sh start [--binary PATH]   fresh data in target/loopback/, nodes 1-3
#   cluster/loopback.sh restart [--binary PATH] the same nodes on their data (e.g. a new binary)
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
start | restart)
    [ -x "$binary" ] || { echo "loopback: no binary at $binary (cargo build --release --locked --bin linkreg)" >&2; exit 1; }
    "$0" stop >/dev/null 2>&1 || true
    if [ "$command" = start ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        "$binary" callers add Operations --cbe 0123456749 --role keeper --file "$dir/callers.toml" >"$dir/keeper.token" 2>/dev/null
        "$binary" callers add Bench --cbe 0203201340 --role writer --file "$dir/callers.toml" >"$dir/writer.token" 2>/dev/null
    fi
    # On a restart the same flags are safe: --init and --join do nothing for a member.
    for n in 1 2 3; do
        mkdir -p "$dir/n$n"
        role=(--join 127.0.0.1:50052)
        [ "$n" = 1 ] && role=(--init)
        client=$((50041 + 10 * n))
        "$binary" serve --id "$n" --data-dir "$dir/n$n/data" --callers "$dir/callers.toml" \
            --client-addr "127.0.0.1:$client" --peer-addr "127.0.0.1:$((client + 1))" \
            --http-addr "127.0.0.1:808$n" "${role[@]}" >>"$dir/n$n/log" 2>&1 &
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
    cli() { LINKREG_TOKEN=$keeper "$binary" cluster "$@"; }
    # One field of a node's `cluster status --json` (empty when it does not answer).
    field() { cli status --server "$1" --json 2>/dev/null | python3 -c "import json, sys; v = json.load(sys.stdin).get('$2'); print('' if v is None else v)" 2>/dev/null || true; }
    voters="127.0.0.1:50051 127.0.0.1:50061 127.0.0.1:50071"
    rm -rf "$dir/n4"
    mkdir -p "$dir/n4"
    # Neither --init nor --join: it waits to be added, so the catch-up is all that is timed.
    "$binary" serve --id 4 --data-dir "$dir/n4/data" --callers "$dir/callers.toml" \
        --client-addr 127.0.0.1:50081 --peer-addr 127.0.0.1:50082 \
        --http-addr 127.0.0.1:8084 >"$dir/n4/log" 2>&1 &
    echo $! >"$dir/n4/pid"
    # A purged log on every voter, so that whichever of them leads can only catch node 4 up by
    # sending its snapshot: a snapshot where there is none yet (openraft purges behind it).
    started=$(date +%s.%N)
    for s in $voters; do
        [ -n "$(field "$s" purged_index)" ] || cli snapshot --server "$s" >/dev/null 2>&1 || true
    done
    for s in $voters; do
        until [ -n "$(field "$s" purged_index)" ]; do sleep 1; done
    done
    echo "every voter has a snapshot and a purged log ($(echo "$(date +%s.%N) - $started" | bc) s)"
    leader=$(field 127.0.0.1:50051 leader_id)
    term=$(field 127.0.0.1:50051 term)
    target=$(field "127.0.0.1:$((50041 + 10 * leader))" last_log_index)
    echo "leader $leader, term $term, last log index $target"
    started=$(date +%s.%N)
    # Returns once node 4 has caught up, or early if the leader changes: the catch-up is timed
    # from node 4's own applied index.
    cli add-learner --id 4 --addr 127.0.0.1:50082 --client-addr 127.0.0.1:50081 \
        --http-addr 127.0.0.1:8084 --server 127.0.0.1:$((50041 + 10 * leader)) >"$dir/n4/add.json" 2>&1 &
    adding=$!
    until applied=$(field 127.0.0.1:50081 applied_index) && [ -n "$applied" ] && [ "$applied" -ge "$target" ]; do
        sleep 1
    done
    echo "learner caught up to $applied in $(echo "$(date +%s.%N) - $started" | bc) s; voters' term $term -> $(field 127.0.0.1:50051 term)"
    wait "$adding" || echo "add-learner: $(cat "$dir/n4/add.json")" >&2
    awk '/VmHWM/ { printf "node 4 peak RSS %.0f MiB\n", $2 / 1024 }' "/proc/$(cat "$dir/n4/pid")/status"
    du -sh "$dir/n4/data" | awk '{ print "node 4 data " $1 }'
    # Digests compare at equal applied indexes (nothing is written meanwhile).
    until [ "$(field 127.0.0.1:50081 applied_index)" = "$(field 127.0.0.1:50051 applied_index)" ]; do sleep 1; done
    d1=$(cli digest --server 127.0.0.1:50051 --json)
    d4=$(cli digest --server 127.0.0.1:50081 --json)
    sha() { sed 's/.*"sha256":"\([0-9a-f]*\)".*/\1/'; }
    if [ "$(echo "$d1" | sha)" = "$(echo "$d4" | sha)" ]; then echo "digests equal"; else
        echo "digests differ: $d1 / $d4" >&2; fi
    cli remove --id 4 --server 127.0.0.1:50051 >/dev/null || true
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
