#!/usr/bin/env bash
# Peer comparison: tower-twilio's verifier against the official twilio-python and twilio-node
# on the same four payloads, in the same run.
#
#   benches/peers/run.sh              # 2 rounds, about 2 minutes once everything is built
#   ROUNDS=3 benches/peers/run.sh
#
# Installs twilio-python 9.13.0 into benches/peers/.venv and twilio-node 6.3.1 into
# benches/peers/node_modules (both git-ignored) when they are missing. Each round times
#   - twilio-python: urllib.parse.parse_qs into a getlist() dict, then RequestValidator.validate
#     (the raw body for JSON): bench_python.py;
#   - twilio-node: querystring.parse, then twilio.validateRequest (validateRequestWithBody for
#     JSON): bench_node.js;
#   - ours: the criterion groups verify/valid/NAME (raw URL + body to verdict) and the hash
#     floor: parts/hmac_sha1/NAME (HMAC-SHA1 over the signed string alone, hmac crate, fresh
#     key), plus parts/body_sha256/d_json (the SHA-256 of the JSON body) for d_json;
# and the table shows the median of the rounds and the ratios.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
payloads="$root/benches/payloads"
ROUNDS="${ROUNDS:-2}"
NAMES=(a_sms b_status c_mms d_json)
python="$here/.venv/bin/python"

if ! "$python" -c 'import twilio, sys; sys.exit(twilio.__version__ != "9.13.0")' 2>/dev/null; then
  echo "==> installing twilio-python 9.13.0 into benches/peers/.venv" >&2
  python3 -m venv "$here/.venv"
  timeout 300 "$python" -m pip install --quiet --disable-pip-version-check twilio==9.13.0
fi
if [ "$(node -p 'require(process.argv[1]).version' "$here/node_modules/twilio/package.json" 2>/dev/null)" != "6.3.1" ]; then
  echo "==> installing twilio-node 6.3.1 into benches/peers/node_modules" >&2
  (cd "$here" && timeout 300 npm install --silent --no-save --no-package-lock --no-audit --no-fund \
    --prefix "$here" twilio@6.3.1)
fi

echo "==> building the criterion benchmark (release)" >&2
(cd "$root" && timeout 900 cargo bench --quiet --bench verify --no-run)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

results="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$results" "$log"' EXIT
for round in $(seq "$ROUNDS"); do
  echo "==> round $round/$ROUNDS: twilio-node" >&2
  (cd "$here" && timeout 120 node bench_node.js "$payloads" "${NAMES[@]}") >>"$results"
  echo "==> round $round/$ROUNDS: tower-twilio (criterion)" >&2
  if ! (cd "$root" && timeout 300 cargo bench --quiet --bench verify -- \
    --warm-up-time 1 --measurement-time 2 '^(verify/valid|parts/hmac_sha1|parts/body_sha256)/' >"$log" 2>&1); then
    cat "$log" >&2
    exit 1
  fi
  python3 - "$target_dir/criterion" "${NAMES[@]}" >>"$results" <<'PY'
import json, sys
root, names = sys.argv[1], sys.argv[2:]
for impl, group in (("ours", "verify/valid"), ("hmac", "parts/hmac_sha1"), ("sha256", "parts/body_sha256")):
    for name in names:
        try:
            with open(f"{root}/{group}/{name}/new/estimates.json") as f:
                median = json.load(f)["median"]["point_estimate"]
        except FileNotFoundError:  # parts/body_sha256 exists for the JSON payload only
            continue
        print(json.dumps({"impl": impl, "payload": name, "median_ns": median}))
PY
  echo "==> round $round/$ROUNDS: twilio-python" >&2
  (cd "$here" && timeout 120 "$python" bench_python.py "$payloads" "${NAMES[@]}") >>"$results"
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def median(impl, payload):
    times = [r["median_ns"] for r in rows if r["impl"] == impl and r["payload"] == payload]
    return statistics.median(times) / 1000 if times else 0.0
print("| payload | ours µs | HMAC-SHA1 µs | hash floor µs | ours / floor | twilio-node µs | node / ours | twilio-python µs | python / ours |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for payload in ("a_sms", "b_status", "c_mms", "d_json"):
    ours, hmac, sha256, node, python = (
        median(i, payload) for i in ("ours", "hmac", "sha256", "node", "python"))
    floor = hmac + sha256
    print(f"| {payload} | {ours:.2f} | {hmac:.2f} | {floor:.2f} | {ours / floor:.2f}× | {node:.1f} | "
          f"{node / ours:.1f}× | {python:.0f} | {python / ours:.0f}× |")
print()
print("The hash floor is HMAC-SHA1 over the signed string, plus the body's SHA-256 for d_json.")
print("Target (issue 23): ours / floor ≤ 2.0 on every payload.")
PY
