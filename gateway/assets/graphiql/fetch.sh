#!/usr/bin/env bash
# Fetch the GraphiQL page's assets again from the npm registry, exactly these versions, and check
# them against SHA256SUMS: what `walkoff serve` embeds and serves at /graphiql/ (no CDN, so the
# page works where the internet is out of reach).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent graphiql@4.1.2 react@18.3.1 react-dom@18.3.1 graphql-ws@5.16.2 >/dev/null
for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
cp graphiql-4.1.2/package/graphiql.min.js graphiql-4.1.2/package/graphiql.min.css \
   react-18.3.1/package/umd/react.production.min.js \
   react-dom-18.3.1/package/umd/react-dom.production.min.js \
   graphql-ws-5.16.2/package/umd/graphql-ws.min.js "$here/"
cd "$here" && sha256sum --check SHA256SUMS
