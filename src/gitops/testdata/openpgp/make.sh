#!/usr/bin/env bash
# Regenerates the OpenPGP fixtures of src/gitops/signing.rs's unit tests with gpg (real keys and
# detached signatures over payload.txt; the keys differ on every run, the tests do not care).
# Keys: alice (Ed25519, signs with her primary key), bob (certify-only primary key, Ed25519
# signing subkey), carol (signs two days after her key was made, which is then set to expire one
# day after it was made), dave (revokes his key after signing), erin (RSA 2048).
set -euo pipefail
cd "$(dirname "$0")"
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill gpg-agent; rm -rf "$GNUPGHOME"' EXIT
g() { gpg --batch --quiet --passphrase '' --pinentry-mode loopback "$@"; }
fpr() { gpg --batch --with-colons --list-keys "$1" | awk -F: '$1 == "fpr" { print $10; exit }'; }

printf 'tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nsigned payload\n' >payload.txt
g --quick-gen-key 'Alice <alice@example.com>' ed25519 sign never
g --quick-gen-key 'Bob <bob@example.com>' ed25519 cert never
g --quick-add-key "$(fpr bob@example.com)" ed25519 sign never
# Carol's key dates from three days ago: she signs a day later than it expires.
t0=$(($(date +%s) - 3 * 86400))
g --faked-system-time "$t0" --quick-gen-key 'Carol <carol@example.com>' ed25519 sign never
g --quick-gen-key 'Dave <dave@example.com>' ed25519 sign never
g --quick-gen-key 'Erin <erin@example.com>' rsa2048 sign never

for who in alice bob dave erin; do
  g --armor --local-user "$who@example.com" --output "$who.sig" --detach-sign payload.txt
done
g --armor --faked-system-time "$((t0 + 2 * 86400))" --local-user carol@example.com \
  --output carol.sig --detach-sign payload.txt
g --faked-system-time "$((t0 + 10))" --quick-set-expire "$(fpr carol@example.com)" 1d
# Dave revokes his key after signing.
g --import <(sed 's/^://' "$GNUPGHOME/openpgp-revocs.d/$(fpr dave@example.com).rev")
for who in alice bob carol dave erin; do
  g --armor --export "$who@example.com" >"$who.asc"
done
for who in alice bob carol dave erin; do
  fpr "$who@example.com" >"$who.fpr"
done
