#!/usr/bin/env bash
# Instructions per request, counted by callgrind (deterministic: independent of the machine's
# load), for the four benchmark payloads:
#   - through the layer, without it, and `verify` alone (benches/instructions.rs), and the
#     plumbing: with - without - verify;
#   - the whole HTTP server (examples/bench_server.rs, user space only) with and without the
#     layer, over keep-alive requests from one client.
# Each count is (run with 2N - run with N) / N, so start-up costs cancel out.
# scripts/instruction_gate.sh (in .ci/run) counts the same probe without the process's start,
# and the server in memory instead of over TCP, so that every run gives the same figures.
#
#   benches/instructions.sh                   # N=1000 (about 2 minutes)
#   SERVER_BIN=... PROBE_BIN=... benches/instructions.sh   # binaries built elsewhere
#
# Under valgrind SHA-1 and SHA-256 run in software (no SHA-NI): hashing weighs about twice
# what it does on the hardware; the plumbing has none. Installs valgrind if it is missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
payloads="$here/payloads"
N="${N:-1000}"
NAMES=(a_sms b_status c_mms d_json)

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
if [ -z "${PROBE_BIN:-}" ] || [ -z "${SERVER_BIN:-}" ]; then
  echo "==> building (release)" >&2
  (cd "$root" && timeout 900 cargo build --quiet --release --example bench_server)
  probe="$(cd "$root" && timeout 900 cargo bench --bench instructions --no-run --message-format json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')"
  target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  PROBE_BIN="${PROBE_BIN:-$probe}"
  SERVER_BIN="${SERVER_BIN:-$target_dir/release/examples/bench_server}"
fi

count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | awk '/Collected/ {print $4}'; }
per_request() { # command... (N is appended)
  local a b
  a="$(count "$@" "$N")"; b="$(count "$@" $((2 * N)))"
  echo $(((b - a) / N))
}

# The server under callgrind, and N (then 2N) keep-alive requests to one of its ports.
server_run() { # port name requests
  local out vg
  out="$(mktemp)"
  TWILIO_AUTH_TOKEN="$(cat "$payloads/token")" valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$SERVER_BIN" 127.0.0.1:18191 127.0.0.1:18192 >/dev/null 2>&1 &
  vg=$!
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/18192) 2>/dev/null && break; sleep 0.1; done
  python3 - "$payloads" "$2" "$1" "$3" <<'PY'
import http.client, sys
payloads, name, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
read = lambda ext: open(f"{payloads}/{name}.{ext}", "rb").read()
headers = {"Host": "example.com", "Content-Type": read("ctype").decode(),
           "X-Twilio-Signature": read("sig").decode(), "User-Agent": "TwilioProxy/1.1"}
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    connection.request("POST", read("path").decode(), body=read("body"), headers=headers)
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
  kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
  rm -f "$out"
}
server_per_request() { # port name
  local a b
  a="$(server_run "$1" "$2" "$N")"; b="$(server_run "$1" "$2" $((2 * N)))"
  echo $(((b - a) / N))
}

echo "| payload | with layer | without | verify | plumbing | server without | server with | server added |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in "${NAMES[@]}"; do
  with="$(per_request "$PROBE_BIN" with "$name")"
  without="$(per_request "$PROBE_BIN" without "$name")"
  verify="$(per_request "$PROBE_BIN" verify "$name")"
  plain="$(server_per_request 18191 "$name")"
  layered="$(server_per_request 18192 "$name")"
  echo "| $name | $with | $without | $verify | $((with - without - verify)) | $plain | $layered | $((layered - plain)) |"
done
