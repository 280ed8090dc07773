#!/usr/bin/env bash
# Create .venv and install fastdraft with its pinned dependencies (CPU torch 2.13.0, OpenVINO 2026.4).
#   bash scripts/install.sh [extra]     e.g. `bash scripts/install.sh test`
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
extra=${1:-}
python -m pip install --quiet --disable-pip-version-check -e ".${extra:+[$extra]}"
# optimum-intel pulls torchvision, and PyPI's torchvision wheel does not load beside the CPU torch 2.13.0
# wheel ("operator torchvision::nms does not exist"), which breaks every transformers model import.
# Nothing here uses torchvision: remove it.
python -m pip uninstall --quiet --yes torchvision
