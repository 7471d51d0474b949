#!/usr/bin/env bash
# Brings up the three-node cluster of cluster/compose.yaml from nothing, in one command:
# secrets (cluster/certs.sh), image (cluster/build-image.sh), node1 (it bootstraps with --init),
# then node2 and node3 (they join). Returns once the cluster has a leader and three voters, all
# answering, and prints `linkreg cluster status`. Safe to repeat: every step is a no-op when done.
#
#   cluster/up.sh [--debug | --binary PATH] [--no-build]
#
# --debug / --binary PATH choose the linkreg binary as for build-image.sh (the same binary is
# the host-side client); --no-build uses the image linkreg:local as it is.
# Environment: UP_TIMEOUT seconds per wait (default 180).
set -euo pipefail

die() {
    echo "up: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
repo=$(dirname "$here")
image_args=()
build=yes
linkreg=${LINKREG:-$repo/target/release/linkreg}
while [ $# -gt 0 ]; do
    case "$1" in
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
    --no-build) build=no ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
timeout=${UP_TIMEOUT:-180}

find_compose || die "neither \`docker compose\` nor docker-compose is installed"
compose+=(-p linkreg -f "$here/compose.yaml")
command -v python3 >/dev/null 2>&1 || die "python3 is missing: it reads linkreg's JSON output"

if [ "$build" = yes ]; then
    "$here/build-image.sh" "${image_args[@]}"
fi
# After build-image.sh, which builds a missing release binary.
[ -x "$linkreg" ] || die "$linkreg is missing: it is the host-side client (build it, or give --debug / --binary PATH)"
"$here/certs.sh" --binary "$linkreg"
docker image inspect linkreg:local >/dev/null 2>&1 || die "image linkreg:local is missing: run cluster/build-image.sh"

token=$(cat "$here/secrets/keeper.token")
status() { # client address -> status JSON on stdout
    "$linkreg" cluster status --server "$1" --token "$token" --json 2>/dev/null
}

wait_until() { # description, then a command that succeeds when it holds
    local what=$1 deadline=$((SECONDS + timeout))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || {
            "${compose[@]}" logs --tail 10 >&2 || true
            die "timed out after ${timeout}s waiting for $what"
        }
        sleep 1
    done
}

node1_answers() { status 127.0.0.1:21051 >/dev/null; }

three_voters() {
    status 127.0.0.1:21051 | python3 -c '
import json, sys
s = json.load(sys.stdin)
voters = sorted(m["id"] for m in s["members"] if m["role"] == "voter")
others = [m["id"] for m in s["members"] if m["role"] != "voter"]
down = [m["id"] for m in s["members"] if not m.get("reachable")]
sys.exit(0 if voters == [1, 2, 3] and not others and not down and s["leader_id"] and s["lag_from"] else 1)
'
}

"${compose[@]}" up -d node1
wait_until "node1 to answer cluster status on 127.0.0.1:21051" node1_answers
"${compose[@]}" up -d node2 node3
wait_until "one leader and three voters (nodes 1, 2, 3) answering" three_voters
"$linkreg" cluster status --server 127.0.0.1:21051 --token "$token"
