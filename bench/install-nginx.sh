#!/usr/bin/env bash
# Installs nginx from Debian's packages for `shlyuz bench gateway`, which compares the gateway with
# nginx `grpc_pass` in the same run. nginx-light has the http2, ssl and grpc modules the bench needs.
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
  nginx -v
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
# The package starts a system nginx on port 80; the bench runs its own instances.
if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
pkill -x nginx >/dev/null 2>&1 || true
nginx -v
