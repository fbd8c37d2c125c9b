#!/usr/bin/env bash
# The library's public surface as a user sees it, from rustdoc's JSON output (nightly): one
# line per item (every path that reaches it, its kind, "hidden" when `#[doc(hidden)]`), then
# the counts on stderr: public modules, root re-exports, items (distinct, modules excluded;
# associated constants and types included, fields and variants not) and methods (inherent and
# trait methods, distinct). All features on.
#
# Usage: scripts/public_items.sh [--hidden] [--methods]
#   --hidden   also list `#[doc(hidden)]` items (the `__private` module)
#   --methods  also list the methods
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
flags=(-Z unstable-options --output-format json)
[[ " $* " == *" --hidden "* ]] && flags+=(--document-hidden-items)
cargo +nightly rustdoc -q -p tower-twilio --all-features -- "${flags[@]}"
python3 - "$target/doc/tower_twilio.json" "$@" <<'PY'
import collections, json, sys

doc = json.load(open(sys.argv[1]))
index, args = doc["index"], sys.argv[2:]
root = index[str(doc["root"])]
items, methods = {}, {}  # id -> {"paths", "kind", "hidden"}

def kind(item):
    return next(iter(item["inner"]))

def hidden(item):
    return any("hidden" in json.dumps(a) for a in item.get("attrs", []))

def add(table, iid, path, k, hid):
    entry = table.setdefault(iid, {"paths": [], "kind": k, "hidden": hid})
    if path not in entry["paths"]:
        entry["paths"].append(path)
    entry["hidden"] = entry["hidden"] and hid

def members(item, path, hid):
    inner = item["inner"][kind(item)]
    ids = list(inner["items"]) if kind(item) == "trait" else []
    for impl in (index.get(str(i)) for i in inner.get("impls", [])):
        imp = impl and impl["inner"]["impl"]
        if imp and imp["trait"] is None and not imp["is_synthetic"] and not imp["blanket_impl"]:
            ids += [i for i in imp["items"] if index.get(str(i), {}).get("visibility") == "public"]
    for i in ids:
        member = index.get(str(i))
        if member:
            is_method = kind(member) == "function"
            add(methods if is_method else items, i, f"{path}::{member['name']}",
                "method" if is_method else kind(member), hid or hidden(member))

def visit(iid, item, path, hid):
    hid = hid or hidden(item)
    add(items, iid, path, kind(item), hid)
    if kind(item) == "module":
        walk(item, path, hid)
    elif kind(item) in ("struct", "enum", "trait", "union"):
        members(item, path, hid)

def walk(module, path, hid):
    for cid in module["inner"]["module"]["items"]:
        item = index.get(str(cid))
        if item is None or kind(item) == "impl":
            continue
        if kind(item) != "use":
            visit(cid, item, f"{path}::{item['name']}", hid or hidden(item))
            continue
        use = item["inner"]["use"]
        target = index.get(str(use["id"])) if use["id"] is not None else None
        if use["is_glob"] and target:
            walk(target, path, hid or hidden(item))
        elif target:
            visit(use["id"], target, f"{path}::{use['name']}", hid or hidden(item))
        else:
            add(items, use["source"], f"{path}::{use['name']}", "foreign", hid or hidden(item))

walk(root, root["name"], False)
shown = lambda e: "--hidden" in args or not e["hidden"]
tables = [items, methods] if "--methods" in args else [items]
for entry in (e for table in tables for e in table.values() if shown(e)):
    print(" = ".join(entry["paths"]), entry["kind"], "hidden" if entry["hidden"] else "", sep="\t")
count = collections.Counter(e["kind"] for e in items.values() if shown(e))
uses = [i for i in root["inner"]["module"]["items"]
        if kind(index[str(i)]) == "use" and ("--hidden" in args or not hidden(index[str(i)]))]
print(f"modules {count.pop('module', 0)}, root re-exports {len(uses)}, items {sum(count.values())} "
      f"({', '.join(f'{k} {v}' for k, v in sorted(count.items()))}), "
      f"methods {sum(1 for e in methods.values() if shown(e))}", file=sys.stderr)
PY
