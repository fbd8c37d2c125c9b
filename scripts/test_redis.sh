#!/usr/bin/env bash
# Starts (or stops) a throwaway Redis server for the replay-guard tests.
#
#   scripts/test_redis.sh start DIR   installs Debian's redis-server if missing, starts it in DIR
#                                     on a free loopback port (no persistence, no eviction), and
#                                     prints the URL for TWILIO_TEST_REDIS_URL
#   scripts/test_redis.sh stop DIR    stops that server
#
# Everything is bounded in time; nothing outside DIR is changed (apart from installing the
# package).
set -euo pipefail

cmd=${1:?usage: test_redis.sh start|stop DIR}
dir=${2:?usage: test_redis.sh start|stop DIR}

case "$cmd" in
start)
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        echo "installing Debian's redis-server" >&2
        export DEBIAN_FRONTEND=noninteractive
        timeout 300 apt-get update -qq >&2
        timeout 600 apt-get install -y -qq redis-server >&2
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$port" > "$dir/port"
    # noeviction: a full server refuses writes (the guard fails closed) instead of forgetting
    # claims, which would let duplicates through.
    timeout 30 redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save '' --appendonly no --maxmemory-policy noeviction >&2 \
        || { cat "$dir/redis.log" >&2 2>/dev/null; exit 1; }
    for _ in $(seq 1 100); do
        if [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            echo "redis://127.0.0.1:$port/"
            exit 0
        fi
        sleep 0.1
    done
    echo "redis-server did not answer on port $port" >&2
    cat "$dir/redis.log" >&2 2>/dev/null || true
    exit 1
    ;;
stop)
    [ -f "$dir/port" ] || exit 0
    port=$(cat "$dir/port")
    timeout 10 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
    ;;
*)
    echo "usage: test_redis.sh start|stop DIR" >&2
    exit 2
    ;;
esac
