#!/usr/bin/env bash
# Cross-check: webhooks signed by the official twilio-python library (9.13.0) are accepted by
# the example server: SMS, message, call and recording status callbacks, voice, a JSON body
# (bodySHA256) and SharedKeys (HMAC-SHA1 and HMAC-SHA256); the same SMS again gets the first
# answer from the replay guard; a wrong token is refused.
#
# Installs twilio==9.13.0 into a venv under the cargo target directory (kept between runs),
# builds the example server, sets up a tenant and a SharedKey with its `tenant` subcommands in a
# temporary SQLite database, starts it on a free loopback port, signs each request with
# `twilio.request_validator.RequestValidator(secret).compute_signature(...)`, sends it with
# urllib, checks the status, then stops the server with SIGTERM (graceful shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
venv="$target/python-crosscheck/venv"
python="$venv/bin/python"

if ! "$python" -c 'import sys, twilio; sys.exit(twilio.__version__ != "9.13.0")' 2>/dev/null; then
    echo "installing twilio==9.13.0 into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check 'twilio==9.13.0'
fi
"$python" -c 'import twilio; print("twilio-python", twilio.__version__)'

timeout 1200 cargo build -q --all-features -p tower-twilio-example-server --bin server
server="$target/debug/server"

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

random_hex() { "$python" -c 'import secrets; print(secrets.token_hex(16))'; }
account="AC$(random_hex)"
(umask 077; random_hex > "$work/token"; random_hex > "$work/shared-key-secret")
db="$work/crosscheck.db"

"$server" --database-url "$db" tenant add --id crosscheck --name "Cross-check" \
    --account-sid "$account" --auth-token-file "$work/token"
"$server" --database-url "$db" tenant add-shared-key --id crosscheck \
    --key-id crosscheck_key_256 --algorithm HMAC_SHA256 --secret-file "$work/shared-key-secret"
"$server" --database-url "$db" tenant add-shared-key --id crosscheck \
    --key-id crosscheck_key_1 --algorithm HMAC_SHA1 --secret-file "$work/shared-key-secret"

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server" --database-url "$db" --port "$port" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

for _ in $(seq 1 120); do
    if "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server exited early:" >&2
        cat "$work/server.out" "$work/server.err" >&2
        exit 1
    fi
    sleep 0.5
done

status=0
# The server wrote a random admin token beside its database; the API needs it.
BASE="http://127.0.0.1:$port" ACCOUNT="$account" TOKEN_FILE="$work/token" \
    ADMIN_TOKEN_FILE="$work/.twilio-admin-token" \
    SECRET_FILE="$work/shared-key-secret" timeout 300 "$python" - <<'PY' || status=$?
import json, os, urllib.error, urllib.parse, urllib.request, uuid

from twilio.request_validator import RequestValidator

base = os.environ["BASE"]
account = os.environ["ACCOUNT"]
token = open(os.environ["TOKEN_FILE"]).read().strip()
secret = open(os.environ["SECRET_FILE"]).read().strip()
admin = open(os.environ["ADMIN_TOKEN_FILE"]).read().strip()

def api(path):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {admin}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)

def sid(prefix):
    return prefix + uuid.uuid4().hex

def send(path, body, signature, content_type, extra=None, query=""):
    headers = {
        "Content-Type": content_type,
        "X-Twilio-Signature": signature,
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "User-Agent": "TwilioProxy/1.1",
    }
    headers.update(extra or {})
    request = urllib.request.Request(base + path + query, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()

def form(path, params, validator=None, algorithm=None, key=None):
    validator = validator or RequestValidator(token)
    signature = validator.compute_signature(base + path, params, algorithm)
    extra = {"X-Twilio-Webhooks-Signature-Settings": f"key={key},algorithm={algorithm}"} if key else None
    return send(path, urllib.parse.urlencode(params), signature, "application/x-www-form-urlencoded", extra)

message = sid("SM")
sms = {
    "ToCountry": "US", "ToState": "CA", "SmsMessageSid": message, "NumMedia": "0", "ToCity": "",
    "FromZip": "94105", "SmsSid": message, "FromState": "CA", "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO", "Body": "Hello from twilio-python \U0001F44B & <friends>",
    "FromCountry": "US", "To": "+14155550199", "ToZip": "", "NumSegments": "1",
    "MessageSid": message, "AccountSid": account, "From": "+14155550100", "ApiVersion": "2010-04-01",
}
def status(value, message_sid):
    params = {"SmsSid": message_sid, "SmsStatus": value, "MessageStatus": value, "To": "+14155550100",
              "MessageSid": message_sid, "AccountSid": account, "From": "+14155550199", "ApiVersion": "2010-04-01"}
    if value == "undelivered":
        params["ErrorCode"] = "30003"
    return params
call = {
    "Called": "+14155550199", "Direction": "inbound", "CallSid": sid("CA"), "To": "+14155550199",
    "CallStatus": "ringing", "From": "+14155550100", "AccountSid": account, "Caller": "+14155550100",
    "ApiVersion": "2010-04-01", "FromCity": "SAN FRANCISCO", "CallerCity": "SAN FRANCISCO",
}

results = []
def check(name, got, expected_status, must_contain=""):
    code, body = got
    ok = code == expected_status and must_contain in body
    results.append(ok)
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {code}" + ("" if ok else f" (expected {expected_status}) {body[:200]!r}"))

print("requests signed by twilio-python's RequestValidator.compute_signature:")
first = form("/twilio/sms", sms)
check("incoming SMS (form POST)", first, 200, "&lt;friends&gt;</Message>")
copy = form("/twilio/sms", sms)
check("the same SMS again (a retry): the replay guard gives the first answer", copy, 200, "&lt;friends&gt;</Message>")
results.append(copy == first)
print(f"  {'ok  ' if copy == first else 'FAIL'} the retry's answer is the first, byte for byte")
tracked = sid("SM")
for value in ["queued", "sent", "delivered", "undelivered", "read", "some_future_status"]:
    check(f"status callback {value}", form("/twilio/status", status(value, tracked)), 204)
check("incoming call (form POST)", form("/twilio/voice", call), 200, "<Say>")

body = json.dumps({"AccountSid": account, "MessageSid": tracked, "MessageStatus": "delivered"})
validator = RequestValidator(token)
query = "?bodySHA256=" + validator.compute_hash(body)
signature = validator.compute_signature(base + "/twilio/status" + query, {})
check("JSON status callback (bodySHA256)", send("/twilio/status", body, signature, "application/json", query=query), 204)

shared = RequestValidator(secret)
check("SharedKey HMAC_SHA256 SMS", form("/twilio/sms", dict(sms, MessageSid=sid("SM")), shared, "HMAC_SHA256", "crosscheck_key_256"), 200)
check("SharedKey HMAC_SHA1 status callback", form("/twilio/status", status("sent", sid("SM")), shared, "HMAC_SHA1", "crosscheck_key_1"), 204)

check("control: signed with a wrong token", form("/twilio/sms", sms, RequestValidator("0" * 32)), 403)

call_sid = sid("CA")
for value in ["initiated", "ringing", "in-progress", "completed"]:
    params = {"AccountSid": account, "CallSid": call_sid, "CallStatus": value, "Direction": "outbound-api",
              "From": "+14155550100", "To": "+14155550199", "ApiVersion": "2010-04-01"}
    if value == "completed":
        params["CallDuration"] = "12"
    check(f"call status callback {value}", form("/twilio/status", params), 204)
recording = {"AccountSid": account, "CallSid": call_sid, "RecordingSid": sid("RE"), "RecordingStatus": "completed",
             "RecordingUrl": "https://api.twilio.com/recording", "RecordingDuration": "11", "RecordingChannels": "1",
             "RecordingSource": "RecordVerb"}
check("recording status callback", form("/twilio/status", recording), 204)

record = api(f"/api/messages/{tracked}")["records"][0]
history = [entry["status"] for entry in record["history"]]
expected = ["queued", "sent", "delivered", "undelivered", "read", "some_future_status", "delivered"]
results.append(history == expected)
print(f"  {'ok  ' if history == expected else 'FAIL'} status history in order: {history}")
record = api(f"/api/calls/{call_sid}")["records"][0]
calls = [entry["status"] for entry in record["history"]] + [f"recording {r['status']}" for r in record["recordings"]]
expected = ["initiated", "ringing", "in-progress", "completed", "recording completed"]
results.append(calls == expected)
print(f"  {'ok  ' if calls == expected else 'FAIL'} call timeline in order: {calls}")

passed = sum(results)
print(f"python cross-check: {passed} passed, {len(results) - passed} failed")
raise SystemExit(0 if passed == len(results) else 1)
PY

kill -TERM "$server_pid"
server_status=0
timeout 30 tail --pid="$server_pid" -f /dev/null || server_status=$?
wait "$server_pid" || server_status=$?
server_pid=
if [ "$server_status" -ne 0 ]; then
    echo "the server did not stop cleanly on SIGTERM (status $server_status):" >&2
    cat "$work/server.err" >&2
    exit 1
fi
if grep -q "$(cat "$work/token")" "$work/server.out" "$work/server.err"; then
    echo "the server printed the auth token" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "server log:" >&2
    cat "$work/server.err" >&2
fi
exit "$status"
