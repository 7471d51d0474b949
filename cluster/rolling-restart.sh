#!/usr/bin/env bash
# Restarts the members of the compose cluster one at a time while it keeps serving: for each
# node, stop it (SIGTERM; it finishes in-flight work and leaves), start it again (a new container
# when the image changed: that is the upgrade), and wait until it is a voter again and has
# applied everything the cluster had committed when it came back, before touching the next one.
# The leader goes last, so the cluster elects a new leader once at most.
#
#   cluster/rolling-restart.sh [--rebuild] [--debug | --binary PATH] [NODE...]
#
# NODE: the ids to restart (default: every voter). --rebuild first rebuilds linkreg:local with
# cluster/build-image.sh (with --debug / --binary PATH passed on): an upgrade. The host-side
# client is target/release/linkreg, target/debug/linkreg with --debug, or PATH.
# Environment: RESTART_TIMEOUT seconds per wait (default 180).
set -euo pipefail

die() {
    echo "rolling-restart: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
repo=$(dirname "$here")
image_args=()
rebuild=no
linkreg=${LINKREG:-$repo/target/release/linkreg}
nodes=()
while [ $# -gt 0 ]; do
    case "$1" in
    --rebuild) rebuild=yes ;;
    --debug)
        image_args=(--debug)
        linkreg=$repo/target/debug/linkreg
        ;;
    --binary)
        [ $# -ge 2 ] || die "--binary needs a path"
        image_args=(--binary "$2")
        linkreg=$2
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    [1-5]) nodes+=("$1") ;;
    *) die "unknown argument $1 (see --help; nodes are 1..5)" ;;
    esac
    shift
done
timeout=${RESTART_TIMEOUT:-180}

find_compose || die "neither \`docker compose\` nor docker-compose is installed"
compose+=(-p linkreg -f "$here/compose.yaml")
command -v python3 >/dev/null 2>&1 || die "python3 is missing: it reads linkreg's JSON output"
[ -s "$here/secrets/keeper.token" ] || die "cluster/secrets/keeper.token is missing: run cluster/certs.sh"
token=$(cat "$here/secrets/keeper.token")

if [ "$rebuild" = yes ]; then
    "$here/build-image.sh" "${image_args[@]}"
fi
[ -x "$linkreg" ] || die "$linkreg is missing: it is the host-side client (build it, or give --debug / --binary PATH)"

client_addr() { echo "127.0.0.1:2${1}051"; }

# Status as seen from the first of the given nodes that answers (JSON on stdout).
status_from() {
    local n
    for n in "$@"; do
        if "$linkreg" cluster status --server "$(client_addr "$n")" --token "$token" --json 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

# Reads a status document on stdin and prints one field computed by a Python expression over
# s (the status) and members (id -> member).
query() {
    python3 -c '
import json, sys
s = json.load(sys.stdin)
members = {m["id"]: m for m in s["members"]}
print(eval(sys.argv[1]))
' "$1"
}

wait_until() {
    local what=$1 deadline=$((SECONDS + timeout))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${timeout}s waiting for $what"
        sleep 1
    done
}

all=(1 2 3 4 5)
current=$(status_from "${all[@]}") || die "no member answers cluster status: is the cluster up?"
voters=$(query '" ".join(str(i) for i in sorted(members) if members[i]["role"] == "voter")' <<<"$current")
leader=$(query 's["leader_id"] or ""' <<<"$current")
[ ${#nodes[@]} -gt 0 ] || read -r -a nodes <<<"$voters"
# Followers first, the leader last.
ordered=()
for n in "${nodes[@]}"; do [ "$n" = "$leader" ] || ordered+=("$n"); done
for n in "${nodes[@]}"; do [ "$n" != "$leader" ] || ordered+=("$n"); done

healthy() { # every voter answers and a leader is known
    local s
    s=$(status_from "${all[@]}") || return 1
    [ "$(query 'bool(s["lag_from"]) and all(m.get("reachable") for m in s["members"])' <<<"$s")" = True ]
}

for n in "${ordered[@]}"; do
    wait_until "every member to answer, with a leader, before restarting node$n" healthy
    echo "rolling-restart: node$n: stopping"
    "${compose[@]}" stop "node$n"
    echo "rolling-restart: node$n: starting"
    "${compose[@]}" up -d --no-deps "node$n"
    others=()
    for m in "${all[@]}"; do [ "$m" = "$n" ] || others+=("$m"); done
    back() { "$linkreg" cluster status --server "$(client_addr "$n")" --token "$token" --json >/dev/null 2>&1; }
    wait_until "node$n to answer again" back
    # What the cluster has committed now is what node n must have applied to be caught up.
    target=
    committed() {
        local s
        s=$(status_from "${others[@]}" "$n") || return 1
        target=$(query 'members[s["lag_from"]]["applied_index"] if s["lag_from"] else ""' <<<"$s")
        [ -n "$target" ]
    }
    wait_until "a leader after restarting node$n" committed
    caught_up() {
        local s
        s=$("$linkreg" cluster status --server "$(client_addr "$n")" --token "$token" --json 2>/dev/null) || return 1
        [ "$(query "members[$n]['role'] == 'voter' and (s['applied_index'] or 0) >= $target" <<<"$s")" = True ]
    }
    wait_until "node$n to be a voter again and apply index $target" caught_up
    echo "rolling-restart: node$n: back, voter, applied index $target reached"
done
# The containers of the image before an upgrade are gone: drop that image.
[ "$rebuild" = no ] || "$here/build-image.sh" --prune
"$linkreg" cluster status --server "$(client_addr "${ordered[0]}")" --token "$token"
