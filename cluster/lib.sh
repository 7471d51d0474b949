# shellcheck shell=bash
# Sourced by the cluster scripts, never run.

# Sets the array `compose` to this host's Compose command, without project or file: Compose v2
# (`docker compose`) where the plugin is there, else the standalone docker-compose of hosts that
# only have v1. Fails when there is neither; the caller says so its own way.
# shellcheck disable=SC2034 # compose is for the scripts that source this file
find_compose() {
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose)
    else
        return 1
    fi
}
