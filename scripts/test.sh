#!/usr/bin/env bash
# Installs everything, builds the docs strictly, then runs the linter and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The docs site, warnings as errors (broken links, bad docstrings, pages missing from the nav).
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -q -d "$(mktemp -d)"
# Headless Chromium for the report test (Debian's package; Playwright drives it, downloads nothing).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/python -m pytest -q "$@"
