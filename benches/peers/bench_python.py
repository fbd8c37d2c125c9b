"""Times twilio-python's parse + validate on the benchmark payloads.

Usage: python bench_python.py PAYLOAD_DIR NAME... ; prints one JSON object per payload.

Form bodies are parsed with urllib.parse.parse_qs into a dict of lists that answers
getlist(), as Flask/werkzeug's MultiDict does, and passed to RequestValidator.validate; a
JSON body is passed as the raw string with bodySHA256 in the URL. Before timing, its verdicts
are checked: it must accept the request, and reject it with one character of the body changed
(as benches/peers/rust does) and with a wrong signature.
"""

import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

from twilio.request_validator import RequestValidator


class MultiDict(dict):
    """A dict of lists with werkzeug's getlist(), which twilio-python looks for."""

    def getlist(self, key):
        return self[key]


def load(directory, name):
    read = lambda ext: (directory / f"{name}.{ext}").read_bytes().decode()
    return read("url"), read("body"), read("ctype"), read("sig")


def change_body(body, is_form):
    """The body with the first letter or digit after the first `=` (a form) or `:` (JSON)
    changed."""
    start = body.index("=" if is_form else ":") + 1
    at = next(i for i in range(start, len(body)) if body[i].isascii() and body[i].isalnum())
    changed = chr(ord(body[at]) - 1 if body[at] in "9Zz" else ord(body[at]) + 1)
    return body[:at] + changed + body[at + 1:]


def main():
    directory = Path(sys.argv[1])
    names = sys.argv[2:]
    token = (directory / "token").read_bytes().decode()
    validator = RequestValidator(token)
    for name in names:
        url, body, ctype, sig = load(directory, name)
        is_form = ctype.startswith("application/x-www-form-urlencoded")

        def check(body, sig):
            if is_form:
                params = MultiDict(parse_qs(body, keep_blank_values=True))
                return validator.validate(url, params, sig)
            return validator.validate(url, body, sig)

        def once():
            return check(body, sig)

        assert once(), f"twilio-python rejects {name}"
        assert not check(change_body(body, is_form), sig), f"twilio-python accepts {name} changed"
        wrong = ("B" if sig.startswith("A") else "A") + sig[1:]
        assert not check(body, wrong), f"twilio-python accepts {name} with a wrong signature"
        # Calibrate a batch to about 50 ms, then time 15 batches and keep the median.
        batch = 1
        while True:
            start = time.perf_counter_ns()
            for _ in range(batch):
                once()
            if time.perf_counter_ns() - start > 50_000_000:
                break
            batch *= 2
        samples = []
        for _ in range(15):
            start = time.perf_counter_ns()
            for _ in range(batch):
                once()
            samples.append((time.perf_counter_ns() - start) / batch)
        print(json.dumps({"impl": "python", "payload": name,
                          "median_ns": statistics.median(samples), "min_ns": min(samples)}))


if __name__ == "__main__":
    main()
