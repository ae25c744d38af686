#!/usr/bin/env bash
# Regenerates cpython/src/layouts.rs: the struct offsets of every
# CPython version whose headers are installed, taken by the C compiler from
# the version's own headers (layout_offsets.c). The output is committed and
# never edited by hand.
#
# Usage: cpython/tools/gen_layouts.sh [PYTHON_PREFIX...]
#   default prefixes: ~/.pyenv/versions/3.{9,10,11,12,13}.* and the
#   free-threaded ~/.cache/pydeep/pythons/3.13.*t (scripts/build-pythons)
# Each prefix must hold include/python3.X/internal/ (pyenv builds do).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/layouts.rs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

prefixes=("$@")
if [ ${#prefixes[@]} -eq 0 ]; then
    for minor in 9 10 11 12 13; do
        for p in "$HOME"/.pyenv/versions/3."$minor".*; do
            [ -d "$p" ] && prefixes+=("$p") && break
        done
    done
    # What scripts/build-pythons installs (issue #18): a 3.13 patch release
    # whose GC state differs from 3.13.0's, and the free-threaded 3.13.
    for p in "${PYDEEP_PYTHONS_DIR:-$HOME/.cache/pydeep/pythons}"/3.13.*[0-9] \
             "${PYDEEP_PYTHONS_DIR:-$HOME/.cache/pydeep/pythons}"/3.13.*t; do
        [ -d "$p" ] && prefixes+=("$p")
    done
fi

tables=()
for prefix in "${prefixes[@]}"; do
    include="$(ls -d "$prefix"/include/python3.* | head -n1)"
    version="$(basename "$prefix")"
    gcc -Wno-deprecated-declarations -I"$include" -I"$include/internal" \
        -o "$work/offsets-$version" "$here/layout_offsets.c"
    "$work/offsets-$version" > "$work/$version.tsv"
    tables+=("$version=$work/$version.tsv")
done

# Into a file of its own first: a refused table leaves the committed one.
python3 "$here/gen_layouts.py" "${tables[@]}" > "$work/generated.rs"
mv "$work/generated.rs" "$out"
echo "wrote $out (${#tables[@]} versions)"
