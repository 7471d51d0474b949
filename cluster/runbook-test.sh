#!/usr/bin/env bash
# Runs the steps of cluster/README.md, in order, against a fresh compose cluster and checks after
# each one, with `linkreg cluster status --json` and `cluster digest --json`, that membership is
# what the step should leave and that every member holds the same state, and that the links
# written so far are all still there. Prints PASS or FAIL per step; stops at the first failure.
# Always ends with `compose down -v` (KEEP_CLUSTER=1 leaves the cluster up for a look).
#
#   cluster/runbook-test.sh [--debug | --binary PATH]
#
# --debug: the binary `cargo test --locked --all-targets` builds (never runs cargo; CI); default
# target/release/linkreg, built when missing or stale; --binary PATH: any other. It is both the
# image's binary and the host-side client.
# Needs Docker with docker compose or docker-compose, python3, openssl; the host ports
# 127.0.0.1:21051..25080 free.
set -euo pipefail -o errtrace

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
repo=$(dirname "$here")
image_args=()
linkreg=$repo/target/release/linkreg
while [ $# -gt 0 ]; do
    case "$1" in
    --debug)
        image_args=(--debug)
        linkreg=$repo/target/debug/linkreg
        ;;
    --binary)
        [ $# -ge 2 ] || {
            echo "runbook-test: --binary needs a path" >&2
            exit 2
        }
        image_args=(--binary "$2")
        linkreg=$(readlink -f "$2")
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "runbook-test: unknown argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

find_compose || {
    echo "runbook-test: FAIL neither \`docker compose\` nor docker-compose is installed" >&2
    exit 1
}
compose+=(-p linkreg -f "$here/compose.yaml")
dc() { "${compose[@]}" "$@"; }
for tool in python3 openssl docker; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "runbook-test: FAIL $tool is missing" >&2
        exit 1
    }
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/linkreg-runbook.XXXXXX")
writer_pid=
current="setup"
results=()

pass() {
    echo "PASS  $current"
    results+=("PASS  $current")
}
fail() {
    echo "FAIL  $current: $*" >&2
    results+=("FAIL  $current: $*")
    exit 1
}
on_error() {
    echo "FAIL  $current: command failed (line $1): $2" >&2
    results+=("FAIL  $current: command failed (line $1): $2")
}
trap 'on_error $LINENO "$BASH_COMMAND"' ERR
cleanup() {
    local rc=$?
    trap - ERR
    set +e
    if [ -n "$writer_pid" ]; then
        touch "$scratch/stop"
        wait "$writer_pid" 2>/dev/null
    fi
    if [ "${KEEP_CLUSTER:-}" = 1 ]; then
        echo "runbook-test: KEEP_CLUSTER=1: the cluster stays up; scratch files in $scratch"
    else
        if [ $rc -ne 0 ]; then
            for c in linkreg-node1 linkreg-node2 linkreg-node3 linkreg-node4; do
                docker logs --tail 10 "$c" >"$scratch/$c.log" 2>&1 && { echo "--- last lines of $c" >&2 && cat "$scratch/$c.log" >&2; }
            done
        fi
        COMPOSE_PROFILES=spare dc down -v --remove-orphans >/dev/null 2>&1
        rm -rf "$scratch"
    fi
    echo
    for r in "${results[@]}"; do echo "$r"; done
    if [ $rc -eq 0 ]; then echo "runbook-test: PASS"; else echo "runbook-test: FAIL"; fi
    exit $rc
}
trap cleanup EXIT

step() {
    current=$1
    echo
    echo "=== $current"
}

# Run a command, show it, and fail the step with its output if it fails.
run() {
    local shown=() arg hide=no
    for arg in "$@"; do # tokens stay out of the log
        if [ $hide = yes ]; then shown+=("<token>"); else shown+=("$arg"); fi
        if [ "$arg" = --token ]; then hide=yes; else hide=no; fi
    done
    echo "+ ${shown[*]}"
    "$@" || fail "\`${shown[*]}\` exited with $?"
}

client() { echo "127.0.0.1:2${1}051"; }
all_clients() {
    local n out=
    for n in "$@"; do out+="${out:+,}$(client "$n")"; done
    echo "$out"
}

keeper() { cat "$here/secrets/keeper.token"; }
writer() { cat "$here/secrets/writer.token"; }
status() { "$linkreg" cluster status --server "$(client "$1")" --token "$(keeper)" --json 2>/dev/null; }
digest() { "$linkreg" cluster digest --server "$(client "$1")" --token "$(keeper)" --json 2>/dev/null; }

wait_until() { # seconds, description, command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
        sleep 1
    done
}

# Asked of node $1: exactly the voters $2 (e.g. 1,2,3), no learner, all answering, a leader.
membership_is() {
    local s
    s=$(status "$1") || return 1
    python3 -c '
import json, sys
s = json.loads(sys.argv[1]); want = sorted(int(i) for i in sys.argv[2].split(","))
voters = sorted(m["id"] for m in s["members"] if m["role"] == "voter")
learners = [m["id"] for m in s["members"] if m["role"] != "voter"]
down = [m["id"] for m in s["members"] if not m.get("reachable")]
sys.exit(0 if voters == want and not learners and not down and s["leader_id"] and s["lag_from"] else 1)
' "$s" "$2"
}

expect_membership() { # voters, asked nodes...
    local want=$1 n
    shift
    for n in "$@"; do
        wait_until 120 "node$n to report voters $want, a leader, every member answering" membership_is "$n" "$want"
    done
    echo "membership: voters $want, seen from nodes $*; leader $(status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])')"
}

# Every given node at the same applied index with the same sha256.
digests_equal() {
    local n d line=()
    for n in "$@"; do
        d=$(digest "$n") || return 1
        line+=("$d")
    done
    python3 -c '
import json, sys
ds = [json.loads(d) for d in sys.argv[1:]]
sys.exit(0 if len({(d["applied_index"], d["sha256"]) for d in ds}) == 1 else 1)
' "${line[@]}"
}

expect_equal_digests() {
    wait_until 60 "equal digests on nodes $*" digests_equal "$@"
    digest "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("digest: applied index %s, sha256 %s, %s rows" % (d["applied_index"], d["sha256"], d["rows"]))' |
        sed "s/^/nodes $* /"
}

ssin=85073003328
run_id=$(date +%s)
created=$scratch/created # values whose creation was acknowledged
: >"$created"

create_link() { # value
    local out
    out=$("$linkreg" link create --server "$(all_clients 1 2 3)" --token "$(writer)" --json \
        --ssin "$ssin" --country NL --type PASSPORT --value "$1" --from 2020-01-01) ||
        fail "link create $1: $out"
    echo "$1" >>"$created"
}

# Values of the links found for the test SSIN on node $1 (a linearizable read: what the cluster
# has committed, served from that node's own state).
links_on() {
    "$linkreg" link search --server "$(client "$1")" --token "$(writer)" --json --linearizable \
        --ssin "$ssin" --country NL --type PASSPORT |
        python3 -c 'import json,sys; [print(l["value"]) for l in json.load(sys.stdin)["links"]]' | sort
}

expect_links() { # nodes...: every acknowledged creation found on each node
    local n missing
    for n in "$@"; do
        links_on "$n" >"$scratch/found.$n" || fail "cannot search links on node$n"
        missing=$(sort -u "$created" | comm -23 - "$scratch/found.$n" | wc -l)
        [ "$missing" -eq 0 ] || fail "node$n lacks $missing acknowledged links, e.g. $(sort -u "$created" | comm -23 - "$scratch/found.$n" | head -3 | paste -sd ' ')"
    done
    echo "links: all $(sort -u "$created" | wc -l) acknowledged links found on nodes $*"
}

###########################################################################################
step "fresh start (compose down -v)"
run env COMPOSE_PROFILES=spare "${compose[@]}" down -v --remove-orphans
left=$(docker ps -aq --filter label=com.docker.compose.project=linkreg | wc -l)
[ "$left" -eq 0 ] || fail "$left containers of project linkreg remain"
pass

step "build the image (cluster/build-image.sh ${image_args[*]})"
started=$SECONDS
run "$here/build-image.sh" "${image_args[@]}"
echo "build-image.sh took $((SECONDS - started)) s"
inside=$(docker run --rm linkreg:local --version) || fail "docker run --rm linkreg:local --version failed"
outside=$("$linkreg" --version)
[ "$inside" = "$outside" ] || fail "the image says '$inside', the host binary '$outside'"
user=$(docker image inspect --format '{{.Config.User}}' linkreg:local)
[ "$user" = 10001 ] || fail "image user is '$user', not 10001"
echo "image: $inside, user $user"
pass

step "generate certificates and callers (cluster/certs.sh)"
run "$here/certs.sh" --binary "$linkreg"
for n in 1 2 3 4 5; do
    pem=$here/secrets/node$n-peer.pem
    openssl x509 -in "$pem" -noout -ext subjectAltName | grep -q 'DNS:linkreg-peer' || fail "$pem lacks DNS:linkreg-peer"
    openssl verify -CAfile "$here/secrets/ca.pem" "$pem" >/dev/null || fail "$pem does not verify against ca.pem"
    head -1 "$here/secrets/node$n-peer.key" | grep -q 'BEGIN PRIVATE KEY' || fail "node$n-peer.key is not PKCS#8 PEM"
done
before=$(cd "$here/secrets" && sha256sum -- * | sha256sum)
"$here/certs.sh" --binary "$linkreg" | grep -q 'nothing to do' || fail "a second run of certs.sh did something"
after=$(cd "$here/secrets" && sha256sum -- * | sha256sum)
[ "$before" = "$after" ] || fail "a second run of certs.sh changed the secrets"
echo "secrets: CA, 5 peer certificates with DNS:linkreg-peer, PKCS#8 keys; a second run changes nothing"
pass

step "bootstrap (cluster/up.sh)"
run "$here/up.sh" --no-build --binary "$linkreg"
expect_membership 1,2,3 1 2 3
expect_equal_digests 1 2 3
pass

step "read cluster status and cluster digest"
run "$linkreg" cluster status --server "$(client 2)" --token "$(keeper)"
for n in 1 2 3; do run "$linkreg" cluster digest --server "$(client "$n")" --token "$(keeper)"; done
pass

step "write links (writer token)"
for i in 1 2 3 4 5; do create_link "RB${run_id}A$i"; done
expect_links 1 2 3
expect_equal_digests 1 2 3
pass

step "add a node (up -d node4: it joins by itself)"
run dc up -d node4
expect_membership 1,2,3,4 1 4
expect_links 4
create_link "RB${run_id}B1"
expect_links 1 2 3 4
expect_equal_digests 1 2 3 4
pass

step "remove a node (cluster remove --id 4, then stop it)"
run "$linkreg" cluster remove --id 4 --server "$(client 1)" --token "$(keeper)"
run dc stop node4
run dc rm -f node4
run docker volume rm linkreg_node4-data
expect_membership 1,2,3 1 2 3
create_link "RB${run_id}C1"
expect_links 1 2 3
expect_equal_digests 1 2 3
pass

step "replace a dead node (kill -9 node3, remove it, wipe its volume, start it: it joins as new)"
run docker kill --signal KILL linkreg-node3
create_link "RB${run_id}D1" # two of three voters are enough
removed() { "$linkreg" cluster remove --id 3 --server "$(client 1)" --token "$(keeper)" >/dev/null 2>&1; }
wait_until 60 "cluster remove --id 3 to succeed" removed
expect_membership 1,2 1 2
run dc rm -f node3
run docker volume rm linkreg_node3-data
run dc up -d node3
expect_membership 1,2,3 1 2 3
expect_links 3
create_link "RB${run_id}D2"
expect_links 1 2 3
expect_equal_digests 1 2 3
pass

step "rolling upgrade (cluster/rolling-restart.sh --rebuild) with writes going on"
# The writer: one link after another through all three nodes, each with a session (client id and
# request id) so that a retry after a failed connection or an unknown outcome is applied once.
writer_loop() {
    local i=0 value attempt
    while [ ! -e "$scratch/stop" ]; do
        i=$((i + 1))
        value="RB${run_id}W$(printf %06d "$i")"
        echo "$value" >>"$scratch/attempted"
        for attempt in $(seq 1 60); do
            if "$linkreg" link create --server "$(all_clients 1 2 3)" --token "$(writer)" --json \
                --client-id "runbook-$run_id" --request-id "$i" \
                --ssin "$ssin" --country NL --type PASSPORT --value "$value" --from 2020-01-01 \
                >"$scratch/last-write" 2>&1; then
                echo "$value" >>"$created"
                break
            fi
            echo "write $value attempt $attempt: $(tr '\n' ' ' <"$scratch/last-write")" >>"$scratch/write-errors"
            sleep 0.5
        done
    done
}
: >"$scratch/attempted"
: >"$scratch/write-errors"
acked_before=$(wc -l <"$created")
writer_loop &
writer_pid=$!
sleep 3
run "$here/rolling-restart.sh" --rebuild "${image_args[@]}"
sleep 3
touch "$scratch/stop"
wait "$writer_pid"
writer_pid=
acked=$(($(wc -l <"$created") - acked_before))
attempted=$(wc -l <"$scratch/attempted")
echo "writer: $attempted writes attempted, $acked acknowledged, $(wc -l <"$scratch/write-errors") failed attempts retried"
[ "$acked" -gt 0 ] || fail "no write was acknowledged during the rolling restart"
[ "$acked" -eq "$attempted" ] || fail "$((attempted - acked)) writes were never acknowledged: $(head -3 "$scratch/write-errors")"
expect_membership 1,2,3 1 2 3
expect_links 1 2 3
# Nothing beyond what was attempted, nothing twice.
for n in 1 2 3; do
    extra=$(grep "^RB${run_id}W" "$scratch/found.$n" | sort | comm -23 - <(sort "$scratch/attempted") | wc -l)
    [ "$extra" -eq 0 ] || fail "node$n has $extra links nobody wrote"
    dupes=$(uniq -d "$scratch/found.$n" | wc -l)
    [ "$dupes" -eq 0 ] || fail "node$n has $dupes values twice"
done
expect_equal_digests 1 2 3
pass

step "backup, then restore into a new cluster"
if ! "$linkreg" backup --help >/dev/null 2>&1; then
    echo "SKIP  $current: this linkreg has no backup command (\`linkreg backup --help\` fails)"
    results+=("SKIP  $current: no \`linkreg backup\` in this binary")
else
    backup=$scratch/backup
    mkdir -p "$backup"
    expect_equal_digests 1 2 3
    digest 1 >"$scratch/digest-before"
    links_on 1 >"$scratch/links-before"
    run "$linkreg" backup --server "$(client 1)" --token "$(keeper)" --out "$backup"
    [ -s "$backup/linkreg.snap" ] && [ -s "$backup/backup.json" ] || fail "backup wrote no linkreg.snap and backup.json in $backup"
    python3 -c '
import json, sys
meta, d = (json.load(open(p)) for p in sys.argv[1:])
sys.exit(0 if (meta["sha256"], meta["rows"]) == (d["sha256"], d["rows"]) else 1)
' "$backup/backup.json" "$scratch/digest-before" || fail "backup.json does not name the digest the cluster had"
    # The containers run as uid 10001: let them read it.
    chmod 0755 "$scratch" "$backup"
    chmod 0644 "$backup"/*
    # A new cluster: every volume wiped.
    run env COMPOSE_PROFILES=spare "${compose[@]}" down -v --remove-orphans
    run dc run --rm --no-deps -v "$backup:/backup:ro" node1 restore --from /backup \
        --id 1 --data-dir /data \
        --client-addr 0.0.0.0:50051 --peer-addr 0.0.0.0:7000 --http-addr 0.0.0.0:8080 \
        --advertise-peer node1-peer:7000 --advertise-client 127.0.0.1:21051 --advertise-http 127.0.0.1:21080 \
        --callers /secrets/callers.toml \
        --peer-cert /secrets/node1-peer.pem --peer-key /secrets/node1-peer.key --peer-ca /secrets/ca.pem
    run dc up -d node1
    expect_membership 1 1
    run dc up -d node2 node3
    expect_membership 1,2,3 1 2 3
    expect_equal_digests 1 2 3
    digest 1 >"$scratch/digest-after"
    python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
print("before backup: sha256 %s, %s rows; restored: sha256 %s, %s rows" % (a["sha256"], a["rows"], b["sha256"], b["rows"]))
sys.exit(0 if (a["sha256"], a["rows"]) == (b["sha256"], b["rows"]) else 1)
' "$scratch/digest-before" "$scratch/digest-after" || fail "the restored cluster's digest differs from the backed-up one"
    links_on 1 >"$scratch/links-after"
    cmp -s "$scratch/links-before" "$scratch/links-after" || fail "the restored cluster's links differ"
    expect_links 1 2 3
    pass
fi

step "tear down (compose down -v)"
run env COMPOSE_PROFILES=spare "${compose[@]}" down -v --remove-orphans
left=$(docker volume ls -q --filter label=com.docker.compose.project=linkreg | wc -l)
[ "$left" -eq 0 ] || fail "$left volumes of project linkreg remain"
run "$here/build-image.sh" --prune
pass
