#!/usr/bin/env bash
# How verification's cost grows with the number of form parameters and with the body's size:
# a least-squares line through the points of the criterion groups growth/params/N and
# growth/body_bytes/N (benches/verify.rs, on the bodies of benches/growth/mod.rs), in ns, and
# through the instructions callgrind counts for `verify` on the same bodies (the probe
# benches/instructions.rs, modes growth-params and growth-body_bytes). Prints, per series, each
# point with its cost per parameter (per byte) and the marginal cost from the point before, then
# the fitted slope, intercept and R².
#
#   benches/growth/run.sh                  # both; about 3 minutes once built
#   ROUNDS=3 benches/growth/run.sh         # criterion rounds (default 2), median per point
#   TIMES=0 benches/growth/run.sh          # instructions only (deterministic: any load will do)
#   INSTRUCTIONS=0 benches/growth/run.sh   # times only
#   PROBE_BIN=path benches/growth/run.sh   # a probe built elsewhere
#
# Times are criterion medians (warm-up 1 s, 2 s of 50 samples, as benches/peers/run.sh) and move
# with the machine's load; the instruction counts do not (callgrind, SHA-1 in software: hashing
# weighs about twice what it does with SHA-NI). Each count is callgrind's count in
# `instructions::measured` (N = 100 verifications after 10 uncounted ones) divided by N, the
# probe run as scripts/instruction_gate.sh runs it (so the same binary gives the same counts).
# Installs valgrind if it is missing.
set -Eeuo pipefail
shopt -s inherit_errexit
trap 'echo "growth: stopped: \"$BASH_COMMAND\" failed (exit $?) at line $LINENO" >&2' ERR

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ROUNDS="${ROUNDS:-2}"
TIMES="${TIMES:-1}"
INSTRUCTIONS="${INSTRUCTIONS:-1}"
N=100
# The sizes of benches/growth/mod.rs (PARAMS, BODY_BYTES).
mapfile -t PARAMS < <(sed -n 's/^pub(crate) const PARAMS: .*= \[\(.*\)\];/\1/p' "$here/mod.rs" | tr -d ' ' | tr ',' '\n')
mapfile -t BODY_BYTES < <(sed -n 's/^pub(crate) const BODY_BYTES: .*= \[\(.*\)\];/\1/p' "$here/mod.rs" | tr -d ' ' | tr ',' '\n')
if [ "${#PARAMS[@]}" -lt 2 ] || [ "${#BODY_BYTES[@]}" -lt 2 ]; then
  echo "growth: could not read PARAMS and BODY_BYTES from $here/mod.rs" >&2
  exit 2
fi

points="$(mktemp)"
# A path of fixed length: the probe runs from a copy here, as in scripts/instruction_gate.sh.
work="$(mktemp -d /tmp/growth.XXXXXX)"
trap 'rm -rf "$points" "$work"' EXIT

if [ "$TIMES" != 0 ]; then
  echo "==> building the criterion benchmark (release)" >&2
  (cd "$root" && timeout 900 cargo bench --quiet --bench verify --no-run)
  target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  for round in $(seq "$ROUNDS"); do
    echo "==> round $round/$ROUNDS: criterion growth/" >&2
    rm -rf "$target_dir/criterion/growth"
    if ! (cd "$root" && timeout 600 cargo bench --quiet --bench verify -- \
      --warm-up-time 1 --measurement-time 2 '^growth/' >"$work/log" 2>&1); then
      cat "$work/log" >&2
      exit 1
    fi
    python3 - "$target_dir/criterion/growth" "${PARAMS[*]}" "${BODY_BYTES[*]}" >>"$points" <<'PY'
import json, sys
root, params, body_bytes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
for series, sizes in (("params", params), ("body_bytes", body_bytes)):
    for size in sizes:
        with open(f"{root}/{series}/{size}/new/estimates.json") as f:
            median = json.load(f)["median"]["point_estimate"]
        print(json.dumps({"series": series, "size": int(size), "unit": "ns", "value": median}))
PY
  done
fi

if [ "$INSTRUCTIONS" != 0 ]; then
  command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
  if [ -z "${PROBE_BIN:-}" ]; then
    echo "==> building the probe (release)" >&2
    PROBE_BIN="$(cd "$root" && timeout 900 cargo bench --bench instructions --no-run --message-format json 2>/dev/null \
      | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')"
  fi
  if ! [ -f "$PROBE_BIN" ] || ! [ -x "$PROBE_BIN" ]; then
    echo "growth: PROBE_BIN=$PROBE_BIN is not an executable file" >&2
    exit 2
  fi
  # From a copy at a path of fixed length, in /, with an empty environment, as the gate does:
  # their lengths move the alignment of what is copied later by a few instructions otherwise.
  cp "$PROBE_BIN" "$work/probe"
  valgrind="$(command -v valgrind)"
  echo "==> counting (callgrind, N = $N per point)" >&2
  for series in params body_bytes; do
    if [ "$series" = params ]; then sizes=("${PARAMS[@]}"); else sizes=("${BODY_BYTES[@]}"); fi
    for size in "${sizes[@]}"; do
      if ! (cd / && env -i "$valgrind" --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect=instructions::measured "$work/probe" "growth-$series" "$size" "$N" \
        >/dev/null 2>"$work/log"); then
        cat "$work/log" >&2
        echo "growth: the probe failed under callgrind: growth-$series $size" >&2
        exit 2
      fi
      collected="$(awk '/Collected :/ {print $4}' "$work/log")"
      if ! [[ "$collected" =~ ^[0-9]+$ ]] || [ "$collected" -lt "$N" ]; then
        cat "$work/log" >&2
        echo "growth: no count in instructions::measured for growth-$series $size (does the probe have the mode?)" >&2
        exit 2
      fi
      echo "{\"series\": \"$series\", \"size\": $size, \"unit\": \"instructions\", \"value\": $((collected / N))}" >>"$points"
    done
  done
fi

python3 - "$points" <<'PY'
import json, statistics, sys
from collections import defaultdict

values = defaultdict(list)
for line in open(sys.argv[1]):
    p = json.loads(line)
    values[p["series"], p["unit"], p["size"]].append(p["value"])

def fit(xs, ys):
    """Least squares y = a + b x: (b, a, R²)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return b, a, 1 - ss_res / ss_tot if ss_tot else 1.0

per = {"params": "parameter", "body_bytes": "`Body` byte"}
heading = {"params": "parameters", "body_bytes": "`Body` bytes"}
for series in ("params", "body_bytes"):
    units = [u for u in ("ns", "instructions") if any(k[:2] == (series, u) for k in values)]
    if not units:
        continue
    sizes = sorted({k[2] for k in values if k[0] == series})
    columns = []
    for unit in units:
        columns += [f"{unit}", f"{unit} / {per[series]}", f"marginal {unit} / {per[series]}"]
    print(f"| {heading[series]} | " + " | ".join(columns) + " |")
    print("| ---: | " + " | ".join("---:" for _ in columns) + " |")
    point = {(unit, size): statistics.median(values[series, unit, size])
             for unit in units for size in sizes if values[series, unit, size]}
    for i, size in enumerate(sizes):
        cells = []
        for unit in units:
            v = point.get((unit, size))
            if v is None:
                cells += ["", "", ""]
                continue
            prev = point.get((unit, sizes[i - 1])) if i else None
            marginal = f"{(v - prev) / (size - sizes[i - 1]):.2f}" if prev is not None else ""
            shown = f"{v:.0f}" if unit == "instructions" or v >= 100 else f"{v:.1f}"
            cells += [shown, f"{v / size:.2f}", marginal]
        print(f"| {size} | " + " | ".join(cells) + " |")
    print()
    for unit in units:
        xs = [s for s in sizes if (unit, s) in point]
        ys = [point[unit, s] for s in xs]
        b, a, r2 = fit(xs, ys)
        print(f"{series}, {unit}: slope {b:.2f} {unit} per {per[series].replace('`', '')}, "
              f"intercept {a:.0f} {unit}, R² {r2:.4f} (least squares over {len(xs)} points)")
    print()
PY
