#!/usr/bin/env python3
"""Writes seed inputs for every fuzz target into fuzz/corpus/<target>/, from the test vectors
in tests/data/vectors plus a few hand-written cases.

Usage: python3 fuzz/seed.py

Each seed is named by the SHA-1 of its content (as libFuzzer names its own finds), so running
the script again adds nothing twice. Structured targets read fields separated by the byte 0xFF
(see fuzz/fuzz_targets/common.rs).
"""

import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "data" / "vectors"
CORPUS = ROOT / "fuzz" / "corpus"
SEP = b"\xff"
ABSENT = b"\xfe"  # verify_request: an absent header


def load_vectors():
    vectors = []
    for path in sorted(VECTORS.glob("vectors_*.json")):
        vectors.extend(json.loads(path.read_text()))
    return vectors


def header(vector, name):
    for key, value in (vector.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def write(target, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha1(data).hexdigest()
    if path.exists():
        return 0
    path.write_bytes(data)
    return 1


def enc(text):
    return text.encode("utf-8")


def main():
    vectors = load_vectors()
    counts = {}

    def add(target, data):
        counts[target] = counts.get(target, 0) + write(target, data)

    for v in vectors:
        url, body = v["url"], v["body"] or ""
        # form: bodies, and query strings (which GET requests sign raw but also decode).
        add("form", enc(body))
        if "?" in url:
            add("form", enc(url.split("?", 1)[1]))
        # settings_header
        settings = header(v, "x-twilio-webhooks-signature-settings")
        if settings is not None:
            add("settings_header", enc(settings))
        # url_candidates: url, body
        add("url_candidates", enc(url) + SEP + enc(body))
        # verify_request: method, url, body, content-type, signature, settings, secret
        signature = header(v, "x-twilio-signature")
        content_type = v.get("content_type")
        fields = [
            enc(v["method"]),
            enc(url),
            enc(body),
            ABSENT if content_type is None else enc(content_type),
            ABSENT if signature is None else enc(signature),
            ABSENT if settings is None else enc(settings),
            enc(v["auth_token"]),
        ]
        add("verify_request", SEP.join(fields))

    for settings in [
        "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
        "algorithm=hmac_sha1",
        " key = k , algorithm = HMAC_SHA1 ",
        "algorithm=HMAC_SHA512,key=k",
        "key=,key=second,algorithm=,algorithm=HMAC_SHA256",
        "algorithm=HMAC_\u017fHA256",
        "",
        ",,,=,==",
    ]:
        add("settings_header", enc(settings))

    # forwarded: flags, peer, target, headers ("name:value").
    def forwarded(mode, peer, target, *headers):
        fields = [bytes([mode, 0]), enc(peer), enc(target)] + [enc(h) for h in headers]
        add("forwarded", SEP.join(fields))

    hosts = sorted({v["url"].split("://", 1)[1].split("/", 1)[0] for v in vectors if "://" in v["url"]})
    for mode in range(3):
        for host in hosts[:8]:
            forwarded(mode, "10.0.0.5", "/twilio/sms?x=1", "host:internal:3000", f"x-forwarded-host:{host}",
                      "x-forwarded-proto:https", f"forwarded:for=198.51.100.7;proto=https;host=\"{host}\"")
        forwarded(mode, "203.0.113.9", "/sms", "host:internal", "x-forwarded-host:evil.example",
                  "forwarded:proto=http;host=evil.example")
        forwarded(mode, "::1", "/sms", "host:h", "x-forwarded-for:6.6.6.6, 198.51.100.7, 10.0.0.3",
                  "x-forwarded-port:8443", "x-forwarded-prefix:/app/")
        forwarded(mode, "::ffff:10.1.2.3", "/sms", "host:h",
                  "forwarded:for=\"[2001:db8::7]:443\";proto=https;host=api.example.com, for=10.0.0.9;host=inner")
        forwarded(mode, "10.0.0.5", "http://Example.com:81/sms?x", "host:other", "forwarded:host=\"unterminated")
        forwarded(mode, "10.0.0.5", "example.com:443", "host:a", "host:b")
        forwarded(mode, "", "/sms", "x-forwarded-proto:http, https", "forwarded:for=\"\\\"q\\\"\";by=x")

    for target in sorted(counts):
        print(f"{target}: {counts[target]} new seeds")


if __name__ == "__main__":
    main()
