#!/usr/bin/env bash
# Generates an Ed25519 message-signing key pair for every participant that lacks one, with openssl:
#   DIR/<id>.signing.key   PKCS#8 PEM private key  -> Secret shlyuz-<id>-signing (key signing.key)
#   DIR/<id>.signing.pub   SubjectPublicKeyInfo PEM -> ConfigMap shlyuz-gateway-directory
# Existing files are never overwritten. Usage: k8s/generate-signing-keys.sh DIR [PARTICIPANT...]
# (default participants: the five targets plus ops, jauynger-portal and sdu).
set -euo pipefail
dir="${1:?usage: $0 DIR [PARTICIPANT...]}"
shift
participants=("$@")
if [ "${#participants[@]}" -eq 0 ]; then
  participants=(gateway registry notify intake housing ops jauynger-portal sdu)
fi
mkdir -p "$dir"
umask 077
for id in "${participants[@]}"; do
  key="$dir/$id.signing.key"
  pub="$dir/$id.signing.pub"
  if [ ! -f "$key" ] && [ ! -f "$pub" ]; then
    openssl genpkey -algorithm ed25519 -out "$key"
  fi
  if [ ! -f "$pub" ]; then
    openssl pkey -in "$key" -pubout -out "$pub"
  fi
  chmod 0644 "$pub"
done
