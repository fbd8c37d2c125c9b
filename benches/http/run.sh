#!/usr/bin/env bash
# HTTP benchmark on 127.0.0.1: the same axum app with and without TwilioSignatureLayer, in one
# process (examples/bench_server.rs), loaded by wrk with each signed payload.
#
#   benches/http/run.sh                      # 3 rounds x 4 payloads x 2 apps x 4 s, ~2 min
#   ROUNDS=1 DURATION=2 benches/http/run.sh  # a quick look
#
# The server runs on one core (SERVER_CPU, default 0) with a single-threaded runtime, wrk on
# the other (CLIENT_CPU, default 1). For every run it reports requests/s, p50/p99 latency and
# the server's CPU time per request (utime+stime from /proc/PID/stat before and after, divided
# by the requests wrk completed); the table shows the median of the rounds and the CPU ratio
# with/without the layer. Installs wrk from Debian if it is missing. Only 127.0.0.1 is used.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
payloads="$root/benches/payloads"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4}"
CONNECTIONS="${CONNECTIONS:-16}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PLAIN="127.0.0.1:${PLAIN_PORT:-18081}"
VERIFIED="127.0.0.1:${VERIFIED_PORT:-18082}"
NAMES=(a_sms b_status c_mms d_json)

if ! command -v wrk >/dev/null; then
  echo "==> installing wrk" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

echo "==> building examples/bench_server.rs (release)" >&2
(cd "$root" && timeout 900 cargo build --quiet --release --example bench_server)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

TWILIO_AUTH_TOKEN="$(cat "$payloads/token")" taskset -c "$SERVER_CPU" \
  "$target_dir/release/examples/bench_server" "$PLAIN" "$VERIFIED" >"$work/server.log" 2>&1 &
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

ticks="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

# One wrk run: prints a JSON line with wrk's numbers and the server CPU ticks it cost.
run() { # label address name duration
  local before after out
  before="$(cpu_ticks)"
  out="$(timeout $(($4 + 30)) taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$4s" \
    -s "$here/post_payload.lua" "http://$2" -- "$payloads" "$3" | tail -n 1)"
  after="$(cpu_ticks)"
  echo "{\"app\": \"$1\", \"payload\": \"$3\", \"cpu_ticks\": $((after - before)), \"wrk\": $out}"
}

echo "==> warming up" >&2
for name in "${NAMES[@]}"; do
  run without "$PLAIN" "$name" 1 >/dev/null
  run with "$VERIFIED" "$name" 1 >/dev/null
done

echo "==> $ROUNDS round(s) of ${DURATION}s per payload and app, $CONNECTIONS connections" >&2
for round in $(seq "$ROUNDS"); do
  for name in "${NAMES[@]}"; do
    # Alternate which app goes first, so that drift in the machine's load evens out.
    if [ $((round % 2)) -eq 1 ]; then
      run without "$PLAIN" "$name" "$DURATION"; run with "$VERIFIED" "$name" "$DURATION"
    else
      run with "$VERIFIED" "$name" "$DURATION"; run without "$PLAIN" "$name" "$DURATION"
    fi
  done
done >"$work/runs.jsonl"

python3 - "$work/runs.jsonl" "$ticks" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
ticks = int(sys.argv[2])
targets = {"a_sms": 1.10, "b_status": 1.10, "c_mms": 1.30, "d_json": 1.10}
for run in runs:
    if run["wrk"]["non_2xx"] or run["wrk"]["socket_errors"]:
        sys.exit(f"errors in {run}")
def stats(app, payload):
    mine = [r for r in runs if r["app"] == app and r["payload"] == payload]
    med = lambda f: statistics.median(f(r) for r in mine)
    return {
        "rps": med(lambda r: r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6)),
        "p50": med(lambda r: r["wrk"]["p50_us"]),
        "p99": med(lambda r: r["wrk"]["p99_us"]),
        "cpu": med(lambda r: r["cpu_ticks"] / ticks * 1e6 / r["wrk"]["requests"]),
    }
print("| payload | app | requests/s | p50 µs | p99 µs | server CPU µs/request | CPU with/without | target |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for payload in targets:
    without, with_ = stats("without", payload), stats("with", payload)
    ratio = with_["cpu"] / without["cpu"]
    verdict = "met" if ratio <= targets[payload] else "missed"
    for app, s in (("without layer", without), ("with layer", with_)):
        last = f"{ratio:.2f} | ≤ {targets[payload]:.2f} {verdict}" if app == "with layer" else " | "
        print(f"| {payload} | {app} | {s['rps']:,.0f} | {s['p50']:.0f} | {s['p99']:.0f} | "
              f"{s['cpu']:.1f} | {last} |")
PY
