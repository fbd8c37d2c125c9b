#!/usr/bin/env bash
# The instruction-count gate: fails when a webhook costs more than 3 % more instructions than
# benches/instructions.expected records, so that speed never regresses unnoticed (and when it
# costs more than 3 % fewer, until the new figure is recorded).
#
#   scripts/instruction_gate.sh            # measure, compare, exit 1 on a figure off by > 3 %
#   scripts/instruction_gate.sh --update   # measure and rewrite benches/instructions.expected
#   PROBE_BIN=path scripts/instruction_gate.sh   # a probe built elsewhere (no build)
#   INSTRUCTIONS_EXPECTED=path scripts/instruction_gate.sh   # compare with (or record in)
#                                          # another file than benches/instructions.expected
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
# gated: what the layer adds is the difference. So is `server-minimal`: the server with the least
# any verifying layer does there (read the body, hand it on in another body type, put one
# shared context into the extensions; nothing parsed or verified), so that what the layer's
# own work adds, beyond verification and that minimal layer, is printed too.
#
# A figure more than 3 % above its record fails. A figure more than 3 % below it fails too,
# with the command that records it: a record left above the real cost would let a later
# regression of the same size pass unnoticed.
#
# The counts depend on the compiler, valgrind's emulated CPU (glibc picks its memcpy by CPU
# features) and the dependencies' versions. The expected file records the rustc and valgrind
# versions; when they differ from the ones here the gate says so, before counting and with the
# verdict, as a likely cause of any figure that moved.
#
# Every figure is checked before it is compared or recorded: a probe that fails, callgrind
# output without its count, a callgrind_annotate that fails or whose total is not callgrind's,
# or a figure that is not a positive number stops the gate (exit 2) with what failed. A key
# recorded in the expected file that the gate did not measure fails it, as does a line there it
# cannot read.
set -Eeuo pipefail
# `count` runs in command substitutions: without this, bash runs them without `set -e`, and a
# failing command inside would not stop it.
shopt -s inherit_errexit
# A command that fails where no check below expects it still stops the gate, saying which.
trap 'echo "instruction gate: stopped: \"$BASH_COMMAND\" failed (exit $?) at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."

expected="${INSTRUCTIONS_EXPECTED:-benches/instructions.expected}"
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

die() { # message: stop the gate, as for a tool that failed (exit 2)
  echo "instruction gate: $*" >&2
  exit 2
}

if [ -z "${PROBE_BIN:-}" ]; then
  echo "==> building the probe (release, default features)" >&2
  PROBE_BIN=$(cargo build --quiet --release --bench instructions --message-format json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
  [ -n "$PROBE_BIN" ] || die "cargo built no executable for benches/instructions.rs"
fi
[ -f "$PROBE_BIN" ] && [ -x "$PROBE_BIN" ] || die "PROBE_BIN=$PROBE_BIN is not an executable file"

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
  local toggle=instructions::measured collected total excluded
  case "$1" in server-*) toggle=instructions::server_poll ;; esac
  if ! (cd / && env -i "$valgrind" --tool=callgrind --callgrind-out-file="$work/out" \
      --toggle-collect="$toggle" "$work/probe" "$1" "$2" "$N" 2>"$work/log"); then
    cat "$work/log" >&2
    die "the probe failed under callgrind: $1 $2"
  fi
  collected=$(awk '/Collected :/ {print $4}' "$work/log")
  if ! [[ "$collected" =~ ^[0-9]+$ ]]; then
    cat "$work/log" >&2
    die "no instruction count in callgrind's output for $1 $2 (\"Collected : N\" expected)"
  fi
  if [ "$collected" -lt "$N" ]; then
    die "callgrind counted nothing in $toggle for $1 $2: renamed or inlined?"
  fi
  if ! callgrind_annotate --inclusive=yes --threshold=100 "$work/out" >"$work/annotate" 2>"$work/annotate.err"; then
    cat "$work/annotate.err" >&2
    die "callgrind_annotate failed on the counts of $1 $2"
  fi
  # Its total must be callgrind's count: otherwise it read something else, and a missing
  # CachedDate::update line would not mean that hyper did not render the date.
  total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$work/annotate")
  if [ "$total" != "$collected" ]; then
    die "callgrind_annotate's total (${total:-none}) is not callgrind's count ($collected) for $1 $2"
  fi
  excluded=$(awk '/hyper::common::date::CachedDate::update / {gsub(",", "", $1); sum += $1} END {print sum + 0}' \
    "$work/annotate")
  echo $(((collected - excluded + N / 2) / N))
}

# Separate assignments: in `"$(a); $(b)"` a failing `a` would go unnoticed.
rustc_version=$(rustc --version) || die "rustc --version failed"
valgrind_version=$(valgrind --version) || die "valgrind --version failed"
toolchain="$rustc_version; $valgrind_version"
recorded_toolchain=$(sed -n 's/^# toolchain: //p' "$expected" 2>/dev/null || true)
if ! $update && [ -n "$recorded_toolchain" ] && [ "$recorded_toolchain" != "$toolchain" ]; then
  echo "note: $expected was recorded with $recorded_toolchain;" >&2
  echo "      this run has $toolchain: another compiler or valgrind moves the counts" >&2
fi
measured="$work/measured"
echo "==> counting (callgrind, N = $N per figure)" >&2
for name in "${payloads[@]}"; do
  for mode in verify with without server-with server-without server-minimal; do
    # Not `|| die`: in the left of `||`, bash would run `count` without `set -e`.
    figure=$(count "$mode" "$name")
    [[ "$figure" =~ ^[1-9][0-9]*$ ]] || die "counting $mode $name gave \"$figure\", not a positive number"
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

# `|| exit`: a failing comparison is the verdict, not a failing command (no ERR message).
python3 - "$expected" "$measured" "$tolerance" "$toolchain" "${gated[*]}" <<'PY' || exit $?
import sys

expected_path, measured_path, tolerance, toolchain, gated = sys.argv[1:]
tolerance = float(tolerance)
gated = gated.split()

measured = {}
for line in open(measured_path):
    name, mode, count = line.split()
    measured[name, mode] = int(count)

recorded, recorded_toolchain, unreadable = {}, None, []
try:
    for number, line in enumerate(open(expected_path), 1):
        if line.startswith("# toolchain: "):
            recorded_toolchain = line[len("# toolchain: "):].strip()
        elif line.strip() and not line.startswith("#"):
            fields = line.split()
            if len(fields) != 3 or not fields[2].isdigit() or int(fields[2]) <= 0:
                unreadable.append(f"line {number}: {line.strip()!r}")
            elif (fields[0], fields[1]) in recorded:
                unreadable.append(f"line {number}: {fields[0]} {fields[1]} recorded twice")
            else:
                recorded[fields[0], fields[1]] = int(fields[2])
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
print("what the layer adds, not gated (a = with - without - verify, b = server-with - server-without,")
print("minimal = server-minimal - server-without: the least any verifying layer adds to this server;")
print("issue 23's target of at most 3 000 is on b - verify, not on the layer's own work beyond the minimal)")
print(f"{'payload':<9} {'without':>8} {'server-without':>15} {'a':>7} {'b':>8} {'b - verify':>11} {'minimal':>8} {'b - verify - minimal':>21}")
for name in names:
    m = lambda mode: measured[name, mode]
    plumbing = m("with") - m("without") - m("verify")
    added = m("server-with") - m("server-without")
    minimal = m("server-minimal") - m("server-without")
    print(f"{name:<9} {m('without'):>8} {m('server-without'):>15} {plumbing:>7} {added:>8} "
          f"{added - m('verify'):>11} {minimal:>8} {added - m('verify') - minimal:>21}")
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
# A record the gate no longer measures (a payload or mode removed or renamed) would otherwise
# sit there unchecked.
unmeasured = sorted(f"{name} {mode}" for name, mode in recorded
                    if (name, mode) not in measured or mode not in gated)
if unmeasured:
    failed = True
    print(f"FAIL: recorded but not measured, in {expected_path}: {', '.join(unmeasured)};")
    print("remove the lines, or record the figures anew with scripts/instruction_gate.sh --update")
if unreadable:
    failed = True
    print(f"FAIL: lines of {expected_path} that are not 'payload mode instructions':")
    for line in unreadable:
        print(f"  {line}")
if note:
    print(note)
if failed:
    sys.exit(1)
print(f"ok: every figure within {tolerance:g} % of {expected_path}")
PY
