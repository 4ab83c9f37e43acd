#!/usr/bin/env bash
# Builds .tools/venv (barman-cloud, WAL-E) on /usr/bin/python3 so the postgres user can run them.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "tools venv: placeholder (filled in by the fixture builder work)"
