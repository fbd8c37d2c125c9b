#!/usr/bin/env bash
# Load, flood and slow-client test of the example server, on 127.0.0.1 only, bounded in count
# and time. Builds the server and the load generator (release), starts the server on a free
# port with a throwaway SQLite database and tenant, runs the example server crate's `loadtest`
# against it, stops it gracefully, then checks the webhook log (every verified webhook exactly
# once, every refused request once with the right outcome or counted as dropped by the log's
# refused queue), the layer's counters on /metrics (they moved by exactly what was sent) and
# the server's peak memory. Prints one summary line; exits non-zero on failure.
#
#   scripts/load_test.sh            # 20 000 mixed, 1 000 flood, 16 slow clients, 20 000 forged
#   REQUESTS=2000 FLOOD=200 SLOW=4 FORGED=2000 scripts/load_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-20000}
FLOOD=${FLOOD:-1000}
SLOW=${SLOW:-16}
FORGED=${FORGED:-20000}
MAX_RSS_MB=${MAX_RSS_MB:-100}
REQUEST_TIMEOUT_SECS=10
target=${CARGO_TARGET_DIR:-target}

# 1 000 concurrent connections need file descriptors on both ends.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/tower-twilio-load.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "building the server and the load generator (release)..."
cargo build --quiet --release -p tower-twilio-example-server --bin server --bin loadtest

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
account="AC$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
( umask 077; python3 -c 'import secrets; print(secrets.token_hex(16), end="")' > "$work/token" )
( umask 077; python3 -c 'import secrets; print(secrets.token_hex(16), end="")' > "$work/admin" )

# The layer's counters, as /metrics shows them (behind the admin token).
scrape() {
  python3 - "$port" "$work/admin" <<'PY'
import sys, urllib.request
port, admin = sys.argv[1], open(sys.argv[2]).read()
request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {admin}"})
print(urllib.request.urlopen(request, timeout=5).read().decode())
PY
}

DATABASE_URL="$work/load.db" TWILIO_ACCOUNT_SID="$account" TWILIO_AUTH_TOKEN="$(cat "$work/token")" \
  ADMIN_TOKEN="$(cat "$work/admin")" PORT="$port" LOG_FORMAT=json RUST_LOG=warn \
  "$target/release/server" --request-timeout-secs "$REQUEST_TIMEOUT_SECS" \
  >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null; then break; fi
  sleep 0.1
done

scrape > "$work/metrics.before"
status=0
timeout 600 "$target/release/loadtest" --addr "127.0.0.1:$port" --token-file "$work/token" \
  --account-sid "$account" --requests "$REQUESTS" --flood "$FLOOD" --slow "$SLOW" \
  --forged "$FORGED" --request-timeout-secs "$REQUEST_TIMEOUT_SECS" | tee "$work/loadtest.out" || status=$?

scrape > "$work/metrics.after"

# Peak resident memory over the server's whole life so far (the kernel's high-water mark).
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid" || true
pid=

python3 - "$work/load.db" "$REQUESTS" "$FLOOD" "$SLOW" "$FORGED" "$peak_kb" "$MAX_RSS_MB" "$status" \
  "$work/metrics.before" "$work/metrics.after" "$work/loadtest.out" <<'PY'
import re, sqlite3, sys
db, requests, flood, slow, forged, peak_kb, max_rss_mb, status, before, after, out = sys.argv[1:]

def counters(path):
    """Sums of verified and of refused-by-reason samples in a /metrics scrape."""
    totals = {}
    for line in open(path):
        m = re.match(r'tower_twilio_webhooks_(verified|refused)_total\{([^}]*)\} (\S+)$', line.strip())
        if m:
            reason = re.search(r'reason="([^"]*)"', m.group(2))
            key = m.group(1) if m.group(1) == "verified" else reason.group(1)
            totals[key] = totals.get(key, 0) + float(m.group(3))
        m = re.match(r'webhook_log_refused_dropped_total (\S+)$', line.strip())
        if m:
            totals["log_dropped"] = float(m.group(1))
    return totals

b, a = counters(before), counters(after)
moved = {k: int(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b)}
requests, flood, slow, forged, peak_kb, max_rss_mb, status = map(int, (requests, flood, slow, forged, peak_kb, max_rss_mb, status))
# Refused requests whose log entry the refused queue dropped (counted, never silent).
dropped = moved.pop("log_dropped", 0)
rows = sqlite3.connect(db).execute("SELECT query, outcome, rejection_reason, status_code FROM webhook_log").fetchall()
by_query = {}
for query, outcome, reason, code in rows:
    by_query.setdefault(query or "", []).append((outcome, reason, code))
expected = {0: ("processed", None, 200), 1: ("rejected", "signature_mismatch", None),
            2: ("rejected", "body_too_large", None), 3: ("rejected", "malformed_signature", None)}
missing = duplicated = wrong = unlogged_refused = 0
def check(query, want):
    """One request's log rows: exactly one with `want`; a refused one may be missing (dropped)."""
    global missing, duplicated, wrong, unlogged_refused
    entries = by_query.get(query, [])
    if not entries:
        if want[0] == "rejected":
            unlogged_refused += 1
        else:
            missing += 1
    elif len(entries) > 1:
        duplicated += 1
    elif entries[0] != want:
        wrong += 1
        if wrong <= 5:
            print(f"{query}: logged {entries[0]}, expected {want}")
for n in range(requests):
    check(f"load={n}", expected[n % 4])
flood_before = unlogged_refused
for n in range(flood):
    check(f"flood={n}", ("rejected", "body_too_large", None))
flood_logged = flood - (unlogged_refused - flood_before)
for n in range(slow):
    # Cut off before verification: refused, one row (or dropped like any refused entry).
    entries = by_query.get(f"slow={n}", [])
    if not entries:
        unlogged_refused += 1
    elif len(entries) > 1:
        duplicated += 1
for n in range(forged):
    check(f"forged={n}", ("rejected", "unknown_account" if n % 2 == 0 else "signature_mismatch", None))
genuine = re.search(r"(\d+) genuine meanwhile", open(out).read())
during_forged = int(genuine.group(1)) if genuine else 0
for n in range(during_forged):
    check(f"during_forged={n}", ("processed", None, 200))
unfinished = sum(1 for entries in by_query.values() for (outcome, _, _) in entries if outcome in ("received", "verified"))
peak_mb = peak_kb / 1024
# Each kind of request moved its counter by exactly as many as were sent: the mixed requests,
# the flood, and the signed webhooks sent beside the slow clients (which are cut off before
# verification and move none).
sent = {k: sum(1 for n in range(requests) if n % 4 == i) for i, k in
        enumerate(("verified", "signature_mismatch", "body_too_large", "malformed_signature"))}
sent["body_too_large"] += flood
meanwhile = re.search(r"(\d+) other webhooks meanwhile", open(out).read())
sent["verified"] += int(meanwhile.group(1)) if meanwhile else 0
sent["verified"] += during_forged
sent["unknown_account"] = (forged + 1) // 2
sent["signature_mismatch"] += forged // 2
metrics_ok = all(moved.get(k, 0) == v for k, v in sent.items())
if not metrics_ok:
    print(f"/metrics moved {moved}, expected {sent}")
ok = (status == 0 and missing == 0 and duplicated == 0 and wrong == 0
      and unlogged_refused == dropped and unfinished == 0 and peak_mb < max_rss_mb and metrics_ok)
print(f"summary: requests={requests + flood + forged + during_forged} "
      f"missing={missing} duplicated={duplicated} wrong_outcome_in_log={wrong} "
      f"refused_not_logged={unlogged_refused} (counted as dropped: {int(dropped)}) "
      f"flood_logged_413={flood_logged}/{flood} unfinished_log_entries={unfinished} "
      f"metrics_moved={dict(sorted(moved.items()))} "
      f"peak_rss_mb={peak_mb:.1f} (limit {max_rss_mb}) loadtest={'PASS' if status == 0 else 'FAIL'} "
      f"=> {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
