#!/usr/bin/env bash
# PostgreSQL for paychan's tests (issue 17: several payee front ends on one database).
#
#   regtest/postgres.sh install     find or install PostgreSQL's server; prints its bin directory
#
# install: uses $PG_BIN if set, else Debian's newest /usr/lib/postgresql/N/bin, else an initdb on
# PATH. Without one, as root it installs Debian's `postgresql` package (apt-get); otherwise it
# says which package to install. The tests start servers of their own (initdb in a temporary
# directory, a free loopback port, run as the unprivileged `postgres` user when the tests run as
# root) and stop them at the end: nothing is started here, and the package's own cluster, if
# its installation started one, is stopped.
set -euo pipefail
shopt -s inherit_errexit

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then
        echo "$PG_BIN"
        return
    fi
    local newest=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/postgres" ]] && newest=$dir
    done
    if [[ -n $newest ]]; then
        echo "$newest"
        return
    fi
    local initdb
    initdb=$(command -v initdb) || return 1
    dirname "$initdb"
}

install() {
    local bin
    if bin=$(find_bin); then
        log "found $("$bin/postgres" --version)"
        echo "$bin"
        return
    fi
    if ((EUID != 0)); then
        log "PostgreSQL's server is not installed: install Debian's postgresql package (sudo apt-get install postgresql), or set PG_BIN"
        exit 1
    fi
    log "installing Debian's postgresql package"
    # No cluster started by the package's scripts outlives this: tests run their own.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    if command -v pg_ctlcluster >/dev/null; then
        for cluster in /etc/postgresql/*/*; do
            [[ -d $cluster ]] || continue
            pg_ctlcluster "$(basename "$(dirname "$cluster")")" "$(basename "$cluster")" stop >&2 2>/dev/null || true
        done
    fi
    bin=$(find_bin) || { log "postgresql installed, but no initdb found"; exit 1; }
    log "installed $("$bin/postgres" --version)"
    echo "$bin"
}

case "${1:-}" in
install) install ;;
*)
    echo "usage: regtest/postgres.sh install" >&2
    exit 2
    ;;
esac
