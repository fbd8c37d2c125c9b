"""The tables of benches/http/run.sh: medians of the rounds, CPU per request with/without.

    python3 benches/http/table.py runs.jsonl [more.jsonl ...]

Each line of the input is one wrk run as run.sh writes it. Several files are pooled (rounds of
separate invocations against the same server build).
"""
import json
import statistics
import sys

# Issue 12's targets for server CPU per request, with the layer over without it.
TARGETS = {"a_sms": 1.15, "b_status": 1.15, "c_mms": 1.40, "d_json": 1.20}

runs = [json.loads(line) for path in sys.argv[1:] for line in open(path)]
for run in runs:
    if run["wrk"]["non_2xx"] or run["wrk"]["socket_errors"]:
        sys.exit(f"errors in {run}")


def stats(load, app, payload):
    mine = [r for r in runs if r["load"] == load and r["app"] == app and r["payload"] == payload]
    med = lambda f: statistics.median(f(r) for r in mine)
    return {
        "rps": med(lambda r: r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6)),
        "p50": med(lambda r: r["wrk"]["p50_us"]),
        "p99": med(lambda r: r["wrk"]["p99_us"]),
        "cpu": med(lambda r: r["cpu_ns"] / 1e3 / r["wrk"]["requests"]),
        "n": len(mine),
    }


for load in ("saturated", "fixed"):
    if not any(r["load"] == load for r in runs):
        continue
    print(f"\n{load} load:\n")
    print("| payload | app | requests/s | p50 µs | p99 µs | server CPU µs/request | CPU with/without | target |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for payload, target in TARGETS.items():
        without, with_ = stats(load, "without", payload), stats(load, "with", payload)
        ratio = with_["cpu"] / without["cpu"]
        verdict = "met" if ratio <= target else "missed"
        for app, s in (("without layer", without), ("with layer", with_)):
            last = f"{ratio:.2f} | ≤ {target:.2f} {verdict}" if app == "with layer" else " | "
            print(f"| {payload} | {app} | {s['rps']:,.0f} | {s['p50']:.0f} | {s['p99']:.0f} | "
                  f"{s['cpu']:.1f} | {last} |")
