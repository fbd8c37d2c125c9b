#!/usr/bin/env bash
# HTTP benchmark on 127.0.0.1: the same axum app with and without TwilioSignatureLayer, in one
# process (examples/bench_server.rs), loaded by wrk with each signed payload.
#
#   benches/http/run.sh                      # 3 rounds x 4 payloads x 2 apps x 2 loads x 4 s, ~4 min
#   ROUNDS=1 DURATION=2 benches/http/run.sh  # a quick look
#   SERVER_BIN=path/to/bench_server benches/http/run.sh   # a server built elsewhere (before/after)
#
# The server runs on one core (SERVER_CPU, default 0) with a single-threaded runtime, wrk on
# the other (CLIENT_CPU, default 1). Two loads:
#   - saturated: CONNECTIONS (16) connections sending back to back, as fast as the server goes;
#   - fixed rate: FIXED_CONNECTIONS (8) connections, each waiting FIXED_DELAY_MS (2) ms after
#     every answer, about 4000 requests/s, which both apps sustain with the core mostly idle:
#     a saturated server batches more syscalls per wakeup when each request costs more, so only
#     at an equal rate does CPU per request compare like for like.
# For every run it reports requests/s, p50/p99 latency and the server's CPU time per request
# (`perf stat -e task-clock` on the server process, all threads, nanosecond resolution, while
# wrk runs, divided by the requests wrk completed); the tables show the median of the rounds
# and the CPU ratio with/without the layer. Installs wrk and perf from Debian if they are
# missing. Only 127.0.0.1 is used.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
payloads="$root/benches/payloads"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4}"
CONNECTIONS="${CONNECTIONS:-16}"
FIXED_CONNECTIONS="${FIXED_CONNECTIONS:-8}"
FIXED_DELAY_MS="${FIXED_DELAY_MS:-2}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PLAIN="127.0.0.1:${PLAIN_PORT:-18081}"
VERIFIED="127.0.0.1:${VERIFIED_PORT:-18082}"
NAMES=(a_sms b_status c_mms d_json)

if ! command -v wrk >/dev/null || ! command -v perf >/dev/null; then
  echo "==> installing wrk and perf" >&2
  apt-get update -qq && apt-get install -y -qq wrk linux-perf >/dev/null
fi

if [ -z "${SERVER_BIN:-}" ]; then
  echo "==> building examples/bench_server.rs (release)" >&2
  (cd "$root" && timeout 900 cargo build --quiet --release --example bench_server)
  target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  SERVER_BIN="$target_dir/release/examples/bench_server"
fi

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

TWILIO_AUTH_TOKEN="$(cat "$payloads/token")" taskset -c "$SERVER_CPU" \
  "$SERVER_BIN" "$PLAIN" "$VERIFIED" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/${VERIFIED%:*}/${VERIFIED#*:}") 2>/dev/null; then break; fi
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done

# The layer is really there: a forged signature gets 403 on one port and 200 on the other.
python3 - "$payloads" "$PLAIN" "$VERIFIED" <<'PY'
import sys, urllib.request, urllib.error
payloads, plain, verified = sys.argv[1:]
read = lambda ext: open(f"{payloads}/a_sms.{ext}", "rb").read()
def status(address, signature):
    request = urllib.request.Request(f"http://{address}{read('path').decode()}", data=read("body"),
        headers={"Content-Type": read("ctype").decode(), "X-Twilio-Signature": signature})
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as error:
        return error.code
good = read("sig").decode()
forged = ("B" if good[0] == "A" else "A") + good[1:]
assert status(verified, good) == 200, "signed request refused"
assert status(verified, forged) == 403, "forged request accepted"
assert status(plain, forged) == 200
PY

# One wrk run: prints a JSON line with wrk's numbers and the server CPU time it cost.
run() { # load label address name duration
  local before after out connections script delay=""
  if [ "$1" = fixed ]; then
    connections="$FIXED_CONNECTIONS" script=fixed_rate.lua delay="$FIXED_DELAY_MS"
  else
    connections="$CONNECTIONS" script=post_payload.lua
  fi
  perf stat -e task-clock -x, -o "$work/cpu" -p "$server" &
  local perf_pid=$!
  sleep 0.2 # perf attached
  out="$(timeout $(($5 + 30)) taskset -c "$CLIENT_CPU" wrk -t1 -c"$connections" -d"$5s" \
    -s "$here/$script" "http://$3" -- "$payloads" "$4" $delay | tail -n 1)"
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  # task-clock in CSV: "<milliseconds>,msec,task-clock,..." ("<not counted>" when idle).
  cpu_ns="$(awk -F, '$3 == "task-clock" {printf "%d", ($1 + 0) * 1e6}' "$work/cpu")"
  echo "{\"load\": \"$1\", \"app\": \"$2\", \"payload\": \"$4\", \"cpu_ns\": ${cpu_ns:-0}, \"wrk\": $out}"
}

echo "==> warming up" >&2
for name in "${NAMES[@]}"; do
  run saturated without "$PLAIN" "$name" 1 >/dev/null
  run saturated with "$VERIFIED" "$name" 1 >/dev/null
done

echo "==> $ROUNDS round(s) of ${DURATION}s per payload, app and load" >&2
for round in $(seq "$ROUNDS"); do
  for load in saturated fixed; do
    for name in "${NAMES[@]}"; do
      # Alternate which app goes first, so that drift in the machine's load evens out.
      if [ $((round % 2)) -eq 1 ]; then
        run "$load" without "$PLAIN" "$name" "$DURATION"; run "$load" with "$VERIFIED" "$name" "$DURATION"
      else
        run "$load" with "$VERIFIED" "$name" "$DURATION"; run "$load" without "$PLAIN" "$name" "$DURATION"
      fi
    done
  done
done >"$work/runs.jsonl"
if [ -n "${RUNS_OUT:-}" ]; then cp "$work/runs.jsonl" "$RUNS_OUT"; fi

python3 "$here/table.py" "$work/runs.jsonl"
