#!/usr/bin/env bash
# Generates the cluster's secrets into cluster/secrets/ (ignored by git; never commit them):
#
#   ca.pem, ca.key                    the peer CA (ECDSA P-256); ca.key stays on this machine
#   nodeN-peer.pem, nodeN-peer.key    N = 1..5: each member's peer certificate, signed by the CA,
#                                     subjectAltName DNS:linkreg-peer (the name every member
#                                     verifies) and DNS:nodeN-peer, extendedKeyUsage serverAuth
#                                     and clientAuth (mutual TLS); keys in PKCS#8 PEM
#   callers.toml                      the callers file the nodes read (token hashes only), made
#                                     with `linkreg callers add`:
#   keeper.token                        "Operations", CBE 0123.456.749, role keeper
#   writer.token                        "Chaos Writers", CBE 0203.201.340, role writer
#
# Does nothing when everything is there; makes what is missing (peer certificates with the
# existing CA, the callers file with both tokens afresh). --force regenerates everything:
# running nodes then need a restart to use the new certificates.
#
# Options: --force; --binary PATH, the linkreg binary that writes the callers file (default:
# $LINKREG, else target/release/linkreg, else target/debug/linkreg).
#
# This is development and test tooling: the containers run as uid 10001 and read the keys from
# a bind mount, so the node keys are made readable by group 10001 (mode 0640) when this script
# may change their group (as root), and by everyone (0644) otherwise. ca.key and the tokens are
# only for this machine: mode 0600. Production keys belong in a secret store, not in a file.
set -euo pipefail

die() {
    echo "certs: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
secrets=$here/secrets
nodes=(1 2 3 4 5)
force=no
linkreg=${LINKREG:-}
while [ $# -gt 0 ]; do
    case "$1" in
    --force) force=yes ;;
    --binary)
        [ $# -ge 2 ] || die "--binary needs a path"
        linkreg=$2
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done

command -v openssl >/dev/null 2>&1 || die "openssl is missing: it makes the CA and the peer certificates"

wanted=(ca.pem ca.key callers.toml keeper.token writer.token)
for n in "${nodes[@]}"; do wanted+=("node$n-peer.pem" "node$n-peer.key"); done
if [ "$force" = no ]; then
    missing=()
    for f in "${wanted[@]}"; do [ -s "$secrets/$f" ] || missing+=("$f"); done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "certs: $secrets is complete; nothing to do (--force regenerates)"
        exit 0
    fi
else
    rm -f "${wanted[@]/#/$secrets/}"
fi

mkdir -p "$secrets"
chmod 0755 "$secrets"
work=$(mktemp -d "${TMPDIR:-/tmp}/linkreg-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Readable inside the containers (uid 10001), see above.
container_readable() {
    if chgrp 10001 "$1" 2>/dev/null; then
        chmod 0640 "$1"
    else
        chmod 0644 "$1"
    fi
}

cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = linkreg
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

new_key() {
    # genpkey writes PKCS#8 ("BEGIN PRIVATE KEY"), the encoding rustls reads.
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ||
        die "openssl could not make an ECDSA P-256 key"
}

if [ ! -s "$secrets/ca.pem" ] || [ ! -s "$secrets/ca.key" ]; then
    # A new CA invalidates every certificate signed by the old one.
    for n in "${nodes[@]}"; do rm -f "$secrets/node$n-peer.pem" "$secrets/node$n-peer.key"; done
    (umask 077 && new_key "$secrets/ca.key")
    chmod 0600 "$secrets/ca.key"
    openssl req -x509 -new -config "$work/openssl.cnf" -extensions ca_ext -key "$secrets/ca.key" \
        -subj "/O=linkreg/CN=linkreg peer CA" -sha256 -days 3650 -out "$secrets/ca.pem" ||
        die "openssl could not make the CA certificate"
    chmod 0644 "$secrets/ca.pem"
    echo "certs: made the peer CA ca.pem"
fi

for n in "${nodes[@]}"; do
    name=node$n-peer
    [ -s "$secrets/$name.pem" ] && [ -s "$secrets/$name.key" ] && continue
    new_key "$secrets/$name.key"
    container_readable "$secrets/$name.key"
    cat >"$work/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:linkreg-peer, DNS:$name
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    openssl req -new -config "$work/openssl.cnf" -key "$secrets/$name.key" \
        -subj "/O=linkreg/CN=$name" -out "$work/$name.csr" ||
        die "openssl could not make the request for $name"
    openssl x509 -req -in "$work/$name.csr" -CA "$secrets/ca.pem" -CAkey "$secrets/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$work/$name.ext" \
        -out "$secrets/$name.pem" 2>/dev/null ||
        die "openssl could not sign the certificate of $name"
    chmod 0644 "$secrets/$name.pem"
    openssl verify -CAfile "$secrets/ca.pem" -purpose sslserver "$secrets/$name.pem" >/dev/null ||
        die "$name.pem does not verify against ca.pem as a server certificate"
    openssl verify -CAfile "$secrets/ca.pem" -purpose sslclient "$secrets/$name.pem" >/dev/null ||
        die "$name.pem does not verify against ca.pem as a client certificate"
    echo "certs: made $name.pem (DNS:linkreg-peer, DNS:$name)"
done

if [ ! -s "$secrets/callers.toml" ] || [ ! -s "$secrets/keeper.token" ] || [ ! -s "$secrets/writer.token" ]; then
    if [ -z "$linkreg" ]; then
        for candidate in "$repo/target/release/linkreg" "$repo/target/debug/linkreg"; do
            if [ -x "$candidate" ]; then
                linkreg=$candidate
                break
            fi
        done
    fi
    [ -n "$linkreg" ] && [ -x "$linkreg" ] ||
        die "no linkreg binary to write the callers file: build one (cargo build --release --locked --bin linkreg) or give --binary PATH"
    # Tokens are shown once: a callers file without its tokens is useless, so both are redone.
    rm -f "$secrets/callers.toml" "$secrets/keeper.token" "$secrets/writer.token"
    add_caller() { # name cbe role token-file
        (umask 077 && "$linkreg" callers add "$1" --cbe "$2" --role "$3" --file "$secrets/callers.toml" >"$secrets/$4") ||
            die "linkreg callers add $1 failed"
        chmod 0600 "$secrets/$4"
    }
    add_caller "Operations" 0123456749 keeper keeper.token
    add_caller "Chaos Writers" 0203201340 writer writer.token
    # Hashes only: safe to be read by the nodes (and by anyone on this machine).
    chmod 0644 "$secrets/callers.toml"
    echo "certs: made callers.toml with keeper.token (Operations) and writer.token (Chaos Writers)"
fi
echo "certs: $secrets is complete"
