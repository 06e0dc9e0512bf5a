#!/usr/bin/env bash
# Copy htmx from its npm package, at the pinned version, into the console's static folder.
# npm verifies the package against the registry's integrity; this script checks it against the pin.
set -euo pipefail
VERSION=2.0.11
INTEGRITY="sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="
cd "$(dirname "$0")/.."
target=src/bulwark/api/console/static/vendor/htmx
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "htmx.org@$VERSION" --silent >/dev/null)
actual="sha512-$(openssl dgst -sha512 -binary "$work/htmx.org-$VERSION.tgz" | base64 -w0)"
[ "$actual" = "$INTEGRITY" ] || { echo "integrity mismatch: $actual" >&2; exit 1; }
tar -xzf "$work/htmx.org-$VERSION.tgz" -C "$work"
cp "$work/package/dist/htmx.min.js" "$work/package/LICENSE" "$target/"
echo "htmx $VERSION copied to $target"
