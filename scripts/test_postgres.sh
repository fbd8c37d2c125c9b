#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL cluster for the example server's tests.
#
#   scripts/test_postgres.sh start DIR   installs Debian's PostgreSQL if missing, runs initdb in
#                                        DIR on a free loopback port, creates the user and
#                                        database, and prints the URL for TWILIO_TEST_POSTGRES_URL
#   scripts/test_postgres.sh stop DIR    stops that cluster
#
# Everything is bounded in time; nothing outside DIR is changed (apart from installing the
# package). Run as root (as CI does) or as a user that can run the PostgreSQL binaries.
set -euo pipefail

cmd=${1:?usage: test_postgres.sh start|stop DIR}
dir=${2:?usage: test_postgres.sh start|stop DIR}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$bin" ] && [ -x "$bin/initdb" ] && echo "$bin"
}

case "$cmd" in
start)
    if ! pg_bin >/dev/null; then
        echo "installing Debian's PostgreSQL" >&2
        export DEBIAN_FRONTEND=noninteractive
        timeout 300 apt-get update -qq >&2
        timeout 600 apt-get install -y -qq postgresql >&2
    fi
    bin=$(pg_bin) || { echo "PostgreSQL binaries not found after installing" >&2; exit 1; }
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    pwfile="$dir/.pw"
    echo "tower_twilio" > "$pwfile"
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$pwfile" --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1 >&2 <<SQL
CREATE ROLE tower_twilio LOGIN CREATEDB PASSWORD 'tower_twilio';
CREATE DATABASE tower_twilio OWNER tower_twilio;
SQL
    echo "postgres://tower_twilio:tower_twilio@127.0.0.1:$port/tower_twilio"
    ;;
stop)
    bin=$(pg_bin) || exit 0
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 || true
    fi
    ;;
*)
    echo "usage: test_postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
