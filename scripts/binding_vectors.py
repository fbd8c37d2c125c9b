#!/usr/bin/env python3
"""Writes tests/data/vectors/vectors_binding.json: the project's own vectors for the binding
rules (docs/SECURITY.md, "What verified means").

Each attack vector is a request an attacker can build from one captured webhook: signed
correctly for what Twilio sent, replayed at another path, with another body or another
method. Before these rules the layer accepted every one of them (issue 14,
`accepted_before_binding_rules`); now it must not (`valid` is false). The controls next to
them are leniencies the rules keep (`valid` is true). The vector test ignores the fields it
does not read (`binding_rule`, `accepted_before_binding_rules`).

Signatures are computed here, with Python's hmac/hashlib and the algorithm of TWILIO_SPEC.md
section 2 (URL, then sorted, de-duplicated decoded form parameters), not with the crate under
test. Deterministic: rerunning gives the same file.

Usage: python3 scripts/binding_vectors.py
"""

import base64
import hashlib
import hmac
import json
import os
from urllib.parse import parse_qsl

TOKEN = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e"
SID = "AC5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e"
BASE = "https://hooks.example.com"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
SMS = (
    f"MessageSid=SM0001&AccountSid={SID}&From=%2B14155550100&To=%2B14155550199"
    "&Body=Hello+there&NumMedia=0"
)
EVENT = '{"AccountSid":"' + SID + '","MessageSid":"SM0001","MessageStatus":"delivered"}'


def sign(url, body=None):
    """X-Twilio-Signature for `url`, with the form `body`'s parameters when given."""
    signed = url
    if body is not None:
        pairs = parse_qsl(body, keep_blank_values=True)
        for name in sorted({name for name, _ in pairs}):
            for value in sorted({v for n, v in pairs if n == name}):
                signed += name + value
    mac = hmac.new(TOKEN.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def with_body_sha256(url, body):
    digest = hashlib.sha256(body.encode()).hexdigest()
    return url + ("&" if "?" in url else "?") + "bodySHA256=" + digest


def vector(vid, description, rule, method, url, content_type, body, signature, valid, before):
    headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
    if content_type:
        headers["Content-Type"] = content_type
    return {
        "id": vid,
        "description": description,
        "binding_rule": rule,
        "auth_token": TOKEN,
        "method": method,
        "url": url,
        "content_type": content_type,
        "body": body,
        "headers": headers,
        "signature": signature,
        "valid": valid,
        "accepted_before_binding_rules": before,
        "source": "scripts/binding_vectors.py",
    }


def main():
    out = []
    sms_url = f"{BASE}/twilio/sms"
    sms_sig = sign(sms_url, SMS)

    # Path binding: the signature for /twilio/sms, replayed at paths that the WHATWG form
    # resolves back to it (twilio-node 6.3.1 accepts those), and controls.
    for vid, path, what in [
        ("binding-path-dotdot", "/twilio/voice/../sms", "a raw `..` segment"),
        ("binding-path-dot", "/twilio/./sms", "a raw `.` segment"),
        ("binding-path-pct2e", "/twilio/recordings/%2e%2e/sms", "`%2e%2e`"),
        ("binding-path-pct2E-mixed", "/twilio/recordings/.%2E/sms", "`.%2E`"),
        ("binding-path-backslash", "/twilio\\sms", "a backslash read as `/`"),
        ("binding-path-backslash-dots", "/twilio/x\\..\\sms", "backslashes and `..`"),
    ]:
        out.append(vector(
            vid,
            f"Attack: a captured SMS webhook signed for /twilio/sms replayed at {path} "
            f"({what}); a router sends it elsewhere (e.g. /twilio/recordings/{{*rest}} with "
            "rest=../sms), so the lenient URL form must not resolve it.",
            "path", "POST", BASE + path, FORM, SMS, sms_sig, False, True,
        ))
    out.append(vector(
        "binding-path-host-case-control",
        "Control: the host's case cannot change routing; the lenient form may fix it.",
        "path", "POST", "https://Hooks.Example.COM/twilio/sms", FORM, SMS, sms_sig, True, True,
    ))
    out.append(vector(
        "binding-path-port-control",
        "Control: an explicit default port cannot change routing.",
        "path", "POST", "https://hooks.example.com:443/twilio/sms", FORM, SMS, sms_sig, True, True,
    ))
    quoted = f"{BASE}/twilio/voice?Caller=O%27Brien&AccountSid={SID}"
    out.append(vector(
        "binding-query-apostrophe-control",
        "Control: a query signed with %27 received with a raw `'` decodes to the same pairs.",
        "path", "GET", f"{BASE}/twilio/voice?Caller=O'Brien&AccountSid={SID}", None, "",
        sign(quoted), True, True,
    ))

    # Query binding: node's querystring stops at 1000 keys, so pairs appended after a
    # 1000-pair query disappear from its re-serialised candidate.
    query = f"AccountSid={SID}&Note=O%27Brien" + "".join(f"&p{i}=v" for i in range(2, 1000))
    signed_get = f"{BASE}/twilio/voice?{query}"
    received = signed_get.replace("O%27Brien", "O'Brien") + "&To=%2B1999&Tenant=evil"
    out.append(vector(
        "binding-query-1000-pairs-appended",
        "Attack: a GET signed over a 1000-pair query, replayed with &To=...&Tenant=evil "
        "appended; node's 1000-key cut-off drops them from its legacy candidate.",
        "query", "GET", received, None, "", sign(signed_get), False, True,
    ))

    # Body binding: a JSON webhook (URL-only signature + bodySHA256) replayed with another
    # body, method or content type.
    json_url = with_body_sha256(f"{BASE}/twilio/status", EVENT)
    json_sig = sign(json_url)
    out.append(vector(
        "binding-body-json-control",
        "Control: the JSON webhook as Twilio sent it.",
        "body", "POST", json_url, JSON, EVENT, json_sig, True, True,
    ))
    for vid, method, ctype, body, what in [
        ("binding-body-json-as-get", "GET", None, "", "a GET with no body"),
        ("binding-body-json-as-empty-form", "POST", FORM, "", "a form POST with an empty body"),
        ("binding-body-json-as-ampersands", "POST", FORM, "&&&", "a form POST of `&&&`"),
        (
            "binding-body-json-as-chosen-form",
            "POST", FORM, "MessageStatus=failed",
            "a form POST with parameters of the attacker's choosing",
        ),
    ]:
        out.append(vector(
            vid,
            f"Attack: a captured JSON webhook (bodySHA256 in the signed URL) replayed as "
            f"{what}; the body hash must be checked whatever the method and content type.",
            "body", method, json_url, ctype, body, json_sig, False, True,
        ))

    # Method binding: the method is not signed; Twilio only sends GET and POST.
    for method in ["PUT", "DELETE", "PATCH"]:
        out.append(vector(
            f"binding-method-{method.lower()}",
            f"Attack: a captured form POST replayed as {method} to reach another handler on "
            "the same path.",
            "method", method, sms_url, FORM, SMS, sms_sig, False, True,
        ))

    path = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "vectors",
                        "vectors_binding.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(out)} vectors to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
