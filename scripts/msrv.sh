#!/usr/bin/env bash
# The library's minimum supported Rust version, checked per feature set without an old
# toolchain: every crate the library builds with (normal and build dependencies, on every
# target, as Cargo.lock pins them) must declare a `rust-version` no newer than the version we
# state for that feature set.
#
# What we state lives in Cargo.toml: `rust-version` for the library with its default features,
# and `[package.metadata.msrv]` for a feature that needs more. README.md's "Minimum supported
# Rust version" section must name the same versions; this script checks that too.
#
# The feature sets: the default features, each feature alone, all features. A crate that
# declares no `rust-version` cannot be checked here and is counted as such.
# (Clippy's `incompatible_msrv` lint, denied in Cargo.toml, covers our own code.)
#
# Usage: scripts/msrv.sh        (exit status 1 on any crate above what we state)
set -euo pipefail
cd "$(dirname "$0")/.."
# `join` needs both sides sorted the same way.
export LC_ALL=C

crate=tower-twilio
metadata=$(cargo metadata --format-version 1 --locked)
# name, version and declared rust-version of every package in Cargo.lock
declared=$(jq -r '.packages[] | "\(.name) v\(.version) \(.rust_version // "-")"' <<<"$metadata" | sort -u)
library=$(jq -c --arg c "$crate" '.packages[] | select(.name == $c)' <<<"$metadata")
crate_msrv=$(jq -r '.rust_version // empty' <<<"$library")
if [ -z "$crate_msrv" ]; then
  echo "$crate declares no rust-version in Cargo.toml" >&2
  exit 1
fi
features=$(jq -r '.features | keys[] | select(. != "default")' <<<"$library")

# The stated version for one feature: its entry in [package.metadata.msrv], else the crate's.
stated_for() {
  local v
  v=$(jq -r --arg f "$1" '.metadata.msrv[$f] // empty' <<<"$library")
  echo "${v:-$crate_msrv}"
}
newest() { sort -V | tail -n 1; }
# newer A B: whether version A is newer than B ("1.88" and "1.88.0" are the same version).
newer() {
  local a b
  a=$(awk -F. '{printf "%d.%d.%d", $1, $2, $3}' <<<"$1")
  b=$(awk -F. '{printf "%d.%d.%d", $1, $2, $3}' <<<"$2")
  [ "$a" != "$b" ] && [ "$(printf '%s\n' "$a" "$b" | newest)" = "$a" ]
}

# Every entry of the table names a real feature and a version above the crate's own.
for f in $(jq -r '.metadata.msrv // {} | keys[]' <<<"$library"); do
  if ! grep -qx "$f" <<<"$features"; then
    echo "[package.metadata.msrv] names \`$f\`, which is not a feature of $crate" >&2
    exit 1
  fi
  v=$(stated_for "$f")
  if ! newer "$v" "$crate_msrv"; then
    echo "[package.metadata.msrv] states $v for \`$f\`, not above rust-version $crate_msrv: remove the entry" >&2
    exit 1
  fi
done

# README.md states the same versions.
readme_msrv=$(awk '/^## Minimum supported Rust version/ {on = 1; next} /^## / {on = 0} on' README.md)
if ! grep -qF "$crate_msrv" <<<"$readme_msrv"; then
  echo "README.md's MSRV section does not state $crate_msrv (Cargo.toml's rust-version)" >&2
  exit 1
fi
for f in $(jq -r '.metadata.msrv // {} | keys[]' <<<"$library"); do
  if ! grep -qF "\`$f\` feature needs $(stated_for "$f")" <<<"$readme_msrv"; then
    echo "README.md's MSRV section does not say \"the \`$f\` feature needs $(stated_for "$f")\"" >&2
    exit 1
  fi
done
# ...and no other version for a feature (a left-over "needs 1.xx" without a table entry).
for f in $features; do
  if grep -qF "\`$f\` feature needs" <<<"$readme_msrv" \
    && ! jq -e --arg f "$f" '.metadata.msrv[$f]' <<<"$library" >/dev/null; then
    echo "README.md's MSRV section states a version for \`$f\`; Cargo.toml's [package.metadata.msrv] does not" >&2
    exit 1
  fi
done

failed=0
check() { # check NAME STATED CARGO-TREE-FEATURE-FLAGS...
  local name=$1 stated=$2
  shift 2
  local tree rows unknown highest above
  tree=$(cargo tree --locked -p "$crate" -e normal,build --target all "$@" --prefix none --format '{p}' |
    awk '{print $1, $2}' | sort -u)
  # "name@version rust-version" for each crate in the tree
  rows=$(join <(awk '{print $1 "@" $2}' <<<"$tree" | sort) <(awk '{print $1 "@" $2, $3}' <<<"$declared" | sort))
  unknown=$(awk '$2 == "-"' <<<"$rows" | wc -l)
  highest=$(awk '$2 != "-" {print $2}' <<<"$rows" | newest)
  above=$(awk '$2 != "-" {print $2, $1}' <<<"$rows" |
    while read -r v p; do
      if newer "$v" "$stated"; then
        echo "  $p declares rust-version $v"
      fi
    done)
  printf '%-10s %3d crates, newest rust-version declared %s (%d declare none), stated %s: ' \
    "$name" "$(wc -l <<<"$rows")" "$highest" "$unknown" "$stated"
  if [ -n "$above" ]; then
    echo "TOO NEW"
    echo "$above"
    failed=1
  else
    echo "ok"
  fi
}

# The default features: what their features state, at least the crate's version.
default_features=$(jq -r '.features.default[]? ' <<<"$library")
stated=$( (echo "$crate_msrv"; for f in $default_features; do stated_for "$f"; done) | newest)
check default "$stated"
for f in $features; do
  check "$f" "$(stated_for "$f")" --no-default-features --features "$f"
done
stated=$( (echo "$crate_msrv"; for f in $features; do stated_for "$f"; done) | newest)
check all "$stated" --all-features

if [ "$failed" = 1 ]; then
  echo "a dependency needs a newer Rust than we state: raise the feature's version in Cargo.toml's" >&2
  echo "[package.metadata.msrv] and README.md's MSRV section, or keep the older dependency" >&2
  exit 1
fi
