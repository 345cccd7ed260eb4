#!/usr/bin/env bash
# The owners' web app's only third-party code, libsodium.js, from the npm registry at the
# version pinned in relay/web/package-lock.json, copied into relay/web/static/vendor/
# (not committed).  The ES-module build of libsodium-wrappers imports the bare name
# "libsodium"; the copy points it at the file beside it, so no import map (an inline
# script, which the page's CSP forbids) is needed.  Idempotent; run by bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/../relay/web"
vendor=static/vendor
if [[ -f $vendor/libsodium-wrappers.mjs && $vendor/libsodium-wrappers.mjs -nt package-lock.json ]]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "web_assets: npm is missing (apt-get install npm)" >&2
    exit 1
fi
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
mkdir -p "$vendor"
cp node_modules/libsodium/dist/modules-esm/libsodium.mjs "$vendor/libsodium.mjs"
sed 's|from"libsodium"|from"./libsodium.mjs"|' \
    node_modules/libsodium-wrappers/dist/modules-esm/libsodium-wrappers.mjs \
    >"$vendor/libsodium-wrappers.mjs"
grep -q 'from"./libsodium.mjs"' "$vendor/libsodium-wrappers.mjs" || {
    echo "web_assets: libsodium-wrappers no longer imports \"libsodium\" as expected" >&2
    exit 1
}
cp node_modules/libsodium-wrappers/LICENSE "$vendor/LICENSE.libsodium" 2>/dev/null || true
