#!/usr/bin/env bash
# Rebuild the shipped draft models/drafts/fastdraft-qwen2.5-coder-1.5b from nothing (see its README.md).
#
#   bash scripts/build_draft_qwen2.5-coder-1.5b.sh [RUN_DIR] [more training.build flags]
#
# The recipe is recorded in training/recipes/fastdraft-qwen2.5-coder-1.5b.json (draft-50m, 30,720-token
# tied vocabulary, two pretraining stages, KD on the target's outputs; budget gpu-15m: ~10 minutes of
# one H100 for training, ~45 CPU-minutes for generation and evaluation). Every stage is resumable: a
# rerun skips what is done. --force: the build replaces the committed IR (its hand-written README.md is
# kept; the generated card is RUN_DIR/model_card.md). Without a CUDA device, pass --device cpu (days).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/fastdraft-qwen2.5-coder-1.5b}
exec "${PYTHON:-.venv/bin/python}" -m training.build --recipe training/recipes/fastdraft-qwen2.5-coder-1.5b.json \
    --out "$RUN" --force "${@:2}"
