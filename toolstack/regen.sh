#!/usr/bin/env bash
# Regenerates toolstack/src/datamodel/generated.rs from the committed facts
# (toolstack/datamodel/xenapi.facts.json). With --check, fails if the committed tables differ from
# what the generator makes. With --facts XEN_API_GIT_DIR COMMIT, first re-extracts the facts from
# a clone of xapi-project/xen-api at COMMIT (doc/data/xenapi.json, ocaml/idl/datamodel_errors.ml,
# ocaml/xapi-consts/api_errors.ml); CI cannot reach GitHub, so the facts file is the pinned input.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
facts=toolstack/datamodel/xenapi.facts.json
out=toolstack/src/datamodel/generated.rs
gen() { cargo run --quiet --package toolstack-gen -- "$@"; }
case "${1:-}" in
--check)
    gen check "$facts" "$out"
    ;;
--facts)
    git_dir=$2 commit=$3
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for f in doc/data/xenapi.json ocaml/idl/datamodel_errors.ml ocaml/xapi-consts/api_errors.ml; do
        git --git-dir "$git_dir" show "$commit:$f" >"$tmp/$(basename "$f")"
    done
    gen facts "$tmp/xenapi.json" "$tmp/datamodel_errors.ml" "$tmp/api_errors.ml" "$commit" "$facts"
    gen tables "$facts" "$out"
    ;;
"")
    gen tables "$facts" "$out"
    ;;
*)
    echo "usage: $0 [--check | --facts XEN_API_GIT_DIR COMMIT]" >&2
    exit 2
    ;;
esac
