#!/bin/sh
# The image's entry point: the HTTP API listens on the container's network only when a
# token guards it (KIDNEY_NODE_HTTP__TOKEN); without one, on the container's loopback.
# An explicit KIDNEY_NODE_HTTP__HOST wins.
set -eu
if [ -z "${KIDNEY_NODE_HTTP__HOST:-}" ]; then
  if [ -n "${KIDNEY_NODE_HTTP__TOKEN:-}" ]; then
    KIDNEY_NODE_HTTP__HOST=0.0.0.0
  else
    KIDNEY_NODE_HTTP__HOST=127.0.0.1
    echo "kidney-node image: KIDNEY_NODE_HTTP__TOKEN is not set, so the HTTP API listens" \
         "on the container's loopback only" >&2
  fi
  export KIDNEY_NODE_HTTP__HOST
fi
exec "$(dirname "$0")/../.venv/bin/kidney-node" --config config/kidney-node.yaml "$@"
