#!/usr/bin/env bash
# Runs the independent Python client against a real `shlyuz up`: installs grpcio and friends into
# a virtualenv, generates the stubs from proto/, starts Shlyuz on ephemeral ports (its registry
# holds the rules fixture), runs the examples and the pytest contract tests, and stops Shlyuz.
# Usage: clients/python/run-contract.sh [path to the shlyuz binary]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
shlyuz="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/shlyuz}"
venv="${SHLYUZ_PYTHON_VENV:-${HOME:-/root}/.cache/shlyuz-python}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" "$here/generate.py"

data="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

ports=()
for target in gateway registry notify intake housing; do
  ports+=(--set "$target.listen=127.0.0.1:0")
done
"$shlyuz" up --data-dir "$data" "${ports[@]}" --set telemetry.admin_listen=127.0.0.1:0 \
  --log-level warn > "$data/up.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ -f "$data/endpoints.json" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then cat "$data/up.log" >&2; exit 1; fi
  sleep 0.1
done
[ -f "$data/endpoints.json" ] || { echo "shlyuz up did not become ready" >&2; cat "$data/up.log" >&2; exit 1; }

"$venv/bin/python" "$here/examples/lookup_person.py" "$data/endpoints.json" 980512391010
"$venv/bin/python" "$here/examples/submit_application.py" "$data/endpoints.json" 980512391010
SHLYUZ_ENDPOINTS="$data/endpoints.json" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/tests"
