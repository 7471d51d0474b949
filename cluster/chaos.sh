#!/usr/bin/env bash
# The chaos test: a fresh three-node cluster (cluster/up.sh), writer and keeper clients with
# exactly-once sessions writing the whole time while random faults hit the nodes (kill -9 of the
# leader, pause of a follower, a node or the leader cut off from the peer network, every node
# killed at once, a member removed, wiped and joined again), then every node's links checked
# against what the clients were told (target/*/linkreg-chaos; see its --help).
#
#   cluster/chaos.sh [--duration 3m | --cycles 20] [--debug] [--skip-if-no-docker]
#                    [--seed N] [--faults kill-leader,...] [--clients N]
#
# --debug     the debug binaries `cargo test --locked --all-targets` builds, never runs cargo (CI);
#             without it the release binaries, built with cargo when missing or stale.
# --skip-if-no-docker   exit 0 (after printing "chaos: SKIPPED ...") when no Docker engine answers;
#             without it that is a failure.
# Default: --duration 3m. Evidence goes to target/chaos/: history.jsonl (every attempt, outcome,
# fault and each node's final links), checker.stderr, one log per container, summary.txt.
# The cluster is always torn down at the end (compose down -v). Exit status: the checker's.
set -euo pipefail

die() {
    echo "chaos: $*" >&2
    exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
repo=$(dirname "$here")
mode=release
skip_without_docker=no
limit=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --duration | --cycles)
        [ $# -ge 2 ] || die "$1 needs a value"
        limit+=("$1" "$2")
        shift
        ;;
    --seed | --faults | --clients)
        [ $# -ge 2 ] || die "$1 needs a value"
        extra+=("$1" "$2")
        shift
        ;;
    --debug) mode=debug ;;
    --skip-if-no-docker) skip_without_docker=yes ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ ${#limit[@]} -gt 0 ] || limit=(--duration 3m)

if ! docker info >/dev/null 2>&1; then
    echo "chaos: SKIPPED (no Docker engine reachable)"
    [ "$skip_without_docker" = yes ] && exit 0
    exit 1
fi

find_compose || die "neither \`docker compose\` nor docker-compose is installed"
project=linkreg
compose_file=$here/compose.yaml
dc() { "${compose[@]}" -p "$project" -f "$compose_file" "$@"; }

bin=$repo/target/$mode
checker=$bin/linkreg-chaos
up_args=()
if [ "$mode" = debug ]; then
    up_args=(--debug)
    for b in linkreg linkreg-chaos; do
        [ -x "$bin/$b" ] || die "$bin/$b is missing: build it with \`cargo test --locked --all-targets --no-run\` (--debug never runs cargo)"
    done
else
    stale=
    for b in linkreg linkreg-chaos; do
        if [ ! -x "$bin/$b" ]; then
            stale=yes
        elif [ -n "$(cd "$repo" && find src proto build.rs Cargo.toml Cargo.lock -newer "$bin/$b" -print -quit 2>/dev/null)" ]; then
            stale=yes
        fi
    done
    if [ -n "$stale" ]; then
        command -v cargo >/dev/null 2>&1 || die "the release binaries are missing or stale and cargo is not installed"
        echo "chaos: building the release binaries (cargo build --release --locked --bin linkreg --bin linkreg-chaos)" >&2
        (cd "$repo" && cargo build --release --locked --bin linkreg --bin linkreg-chaos)
    fi
fi

out=$repo/target/chaos
mkdir -p "$out"
rm -f "$out"/*.log "$out"/history.jsonl "$out"/checker.stderr "$out"/checker.stdout "$out"/summary.txt

# Down: every service, the spare ones too, so that nothing of an earlier cluster survives.
teardown() {
    local names
    names=$(docker ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}}' 2>/dev/null || true)
    for c in $names; do
        docker logs --timestamps "$c" >"$out/$c.log" 2>&1 || true
    done
    COMPOSE_PROFILES=spare dc down -v --remove-orphans >/dev/null 2>&1 ||
        echo "chaos: compose down failed; see docker ps -a" >&2
}
COMPOSE_PROFILES=spare dc down -v --remove-orphans >/dev/null 2>&1 || true
trap teardown EXIT
trap 'exit 130' INT TERM

"$here/up.sh" "${up_args[@]}" >&2

echo "chaos: running $checker ${limit[*]} ${extra[*]}" >&2
started=$SECONDS
set +e
(cd "$repo" && "$checker" \
    --servers 127.0.0.1:21051,127.0.0.1:22051,127.0.0.1:23051 \
    --containers linkreg-node1,linkreg-node2,linkreg-node3 \
    --peer-network ${project}_peers \
    --keeper-token-file "$here/secrets/keeper.token" \
    --writer-token-file "$here/secrets/writer.token" \
    --compose-file "$compose_file" --compose-project "$project" --compose-cmd "${compose[*]}" \
    --history "$out/history.jsonl" \
    "${limit[@]}" "${extra[@]}") >"$out/checker.stdout" 2> >(tee "$out/checker.stderr" >&2)
status=$?
set -e
cat "$out/checker.stdout"
{
    tail -n 1 "$out/checker.stdout"
    echo "took $((SECONDS - started)) s, exit status $status"
} >"$out/summary.txt"
echo "chaos: took $((SECONDS - started)) s; evidence in $out" >&2
exit $status
