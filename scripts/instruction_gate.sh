#!/usr/bin/env bash
# The instruction-count gate: fails when a webhook costs more than 3 % more instructions than
# benches/instructions.expected records, so that speed never regresses unnoticed (and when it
# costs more than 3 % fewer, until the new figure is recorded).
#
#   scripts/instruction_gate.sh            # measure, compare, exit 1 on a figure off by > 3 %
#   scripts/instruction_gate.sh --update   # measure and rewrite benches/instructions.expected
#   PROBE_BIN=path scripts/instruction_gate.sh   # a probe built elsewhere (no build)
#
# For each payload of benches/payloads, callgrind counts the instructions of one webhook
# (benches/instructions.rs, built in release with the default features), N times over after a
# warm-up, divided by N:
#   verify       `WebhookRequest::verify` alone;
#   with         one request through `TwilioSignatureLayer` to a handler that answers 200;
#   server-with  one keep-alive request through hyper's HTTP/1 server, axum's router, the layer
#                and a TwiML handler (in memory: no socket, so nothing depends on timing).
# Only the counted function (`--toggle-collect`) is counted: the process's start and exit, the
# warm-up, the client and the runtime's scheduling are not, nor hyper's once-a-second `Date`
# rendering (below): every run counts the same figures.
# `without` and `server-without` (the same without the layer) are measured and printed, not
# gated: what the layer adds is the difference.
#
# A figure more than 3 % above its record fails. A figure more than 3 % below it fails too,
# with the command that records it: a record left above the real cost would let a later
# regression of the same size pass unnoticed.
#
# The counts depend on the compiler, valgrind's emulated CPU (glibc picks its memcpy by CPU
# features) and the dependencies' versions. The expected file records the rustc and valgrind
# versions; when they differ from the ones here the gate says so, as a likely cause.
set -euo pipefail
cd "$(dirname "$0")/.."

expected=benches/instructions.expected
tolerance=3
N=100
payloads=(a_sms b_status c_mms d_json)
gated=(verify with server-with)

update=false
case "${1:-}" in
  --update) update=true ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is missing (Debian: apt-get install valgrind)" >&2
  exit 2
fi

if [ -z "${PROBE_BIN:-}" ]; then
  echo "==> building the probe (release, default features)" >&2
  PROBE_BIN=$(cargo build --quiet --release --bench instructions --message-format json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
  if [ -z "$PROBE_BIN" ]; then
    echo "cargo built no executable for benches/instructions.rs" >&2
    exit 2
  fi
fi

# The probe runs from a copy at a path of fixed length, in `/`, with an empty environment: the
# environment, the arguments and the path are copied onto the process's stack, and their length
# moves the alignment of what is copied later (a few instructions per request otherwise).
work=$(mktemp -d /tmp/instruction-gate.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$PROBE_BIN" "$work/probe"
valgrind=$(command -v valgrind)

# Instructions per webhook: mode payload. hyper's cached `Date` header is subtracted: hyper
# renders it again when the clock has passed a second, so whether that happens while counting
# depends on the time the run takes (about 500 instructions each time).
count() {
  local toggle=instructions::measured collected excluded
  case "$1" in server-*) toggle=instructions::server_poll ;; esac
  if ! (cd / && env -i "$valgrind" --tool=callgrind --callgrind-out-file="$work/out" \
      --toggle-collect="$toggle" "$work/probe" "$1" "$2" "$N" 2>"$work/log"); then
    cat "$work/log" >&2
    echo "the probe failed: $1 $2" >&2
    exit 2
  fi
  collected=$(awk '/Collected :/ {print $4}' "$work/log")
  excluded=$(callgrind_annotate --inclusive=yes --threshold=100 "$work/out" |
    awk '/hyper::common::date::CachedDate::update / {gsub(",", "", $1); sum += $1} END {print sum + 0}')
  if [ -z "$collected" ] || [ "$collected" -lt "$N" ]; then
    echo "callgrind counted nothing in $toggle for $1 $2: renamed or inlined?" >&2
    exit 2
  fi
  echo $(((collected - excluded + N / 2) / N))
}

toolchain="$(rustc --version); $(valgrind --version)"
measured="$work/measured"
echo "==> counting (callgrind, N = $N per figure)" >&2
for name in "${payloads[@]}"; do
  for mode in verify with without server-with server-without; do
    figure=$(count "$mode" "$name")
    echo "$name $mode $figure" >>"$measured"
  done
done

if $update; then
  {
    echo "# Instructions per webhook, counted by scripts/instruction_gate.sh (callgrind), which"
    echo "# fails when a measured figure is more than $tolerance % off the one recorded here."
    echo "# Rewrite with: scripts/instruction_gate.sh --update"
    echo "# toolchain: $toolchain"
    echo "# payload mode instructions"
    for name in "${payloads[@]}"; do
      for mode in "${gated[@]}"; do
        grep "^$name $mode " "$measured"
      done
    done
  } >"$expected"
  echo "recorded in $expected:"
  grep -v '^#' "$expected"
  exit 0
fi

python3 - "$expected" "$measured" "$tolerance" "$toolchain" "${gated[*]}" <<'PY'
import sys

expected_path, measured_path, tolerance, toolchain, gated = sys.argv[1:]
tolerance = float(tolerance)
gated = gated.split()

measured = {}
for line in open(measured_path):
    name, mode, count = line.split()
    measured[name, mode] = int(count)

recorded, recorded_toolchain = {}, None
try:
    for line in open(expected_path):
        if line.startswith("# toolchain: "):
            recorded_toolchain = line[len("# toolchain: "):].strip()
        elif line.strip() and not line.startswith("#"):
            name, mode, count = line.split()
            recorded[name, mode] = int(count)
except FileNotFoundError:
    print(f"{expected_path} is missing: record the figures with scripts/instruction_gate.sh --update")
    sys.exit(1)

names = sorted({name for name, _ in measured})
slower, faster, missing = [], [], []
print(f"{'payload':<9} {'mode':<12} {'recorded':>9} {'measured':>9} {'change':>8}")
for name in names:
    for mode in gated:
        now = measured[name, mode]
        before = recorded.get((name, mode))
        if before is None:
            missing.append(f"{name} {mode}")
            print(f"{name:<9} {mode:<12} {'-':>9} {now:>9} {'new':>8}")
            continue
        change = (now - before) / before * 100
        print(f"{name:<9} {mode:<12} {before:>9} {now:>9} {change:>+7.2f}%")
        line = f"{name} {mode}: {now} instructions, {before} recorded ({change:+.2f} %)"
        if change > tolerance:
            slower.append(line)
        elif change < -tolerance:
            faster.append(line)

print()
print("what the layer adds, not gated (a = with - without - verify, b = server-with - server-without)")
print(f"{'payload':<9} {'without':>8} {'server-without':>15} {'a':>7} {'b':>8} {'b - verify':>11}")
for name in names:
    m = lambda mode: measured[name, mode]
    plumbing = m("with") - m("without") - m("verify")
    added = m("server-with") - m("server-without")
    print(f"{name:<9} {m('without'):>8} {m('server-without'):>15} {plumbing:>7} {added:>8} {added - m('verify'):>11}")
print()

if recorded_toolchain and recorded_toolchain != toolchain:
    note = (f"note: recorded with {recorded_toolchain}, measured with {toolchain}; "
            "another compiler or valgrind moves the counts")
else:
    note = None
failed = False
if slower:
    failed = True
    print(f"FAIL: more than {tolerance:g} % more instructions than recorded in {expected_path}:")
    for line in slower:
        print(f"  {line}")
    print("Find what costs more (callgrind_annotate on a run of the probe, see docs/BENCHMARKS.md);")
    print("if the cost is wanted, record it with scripts/instruction_gate.sh --update and say why.")
if faster:
    failed = True
    print(f"FAIL: more than {tolerance:g} % fewer instructions than recorded in {expected_path}:")
    for line in faster:
        print(f"  {line}")
    print("Faster: record it with scripts/instruction_gate.sh --update, so that the gate holds")
    print("the new figure (a record left high would let a regression of the same size pass).")
if missing:
    failed = True
    print(f"FAIL: not recorded in {expected_path}: {', '.join(missing)}; scripts/instruction_gate.sh --update")
if note:
    print(note)
if failed:
    sys.exit(1)
print(f"ok: every figure within {tolerance:g} % of {expected_path}")
PY
