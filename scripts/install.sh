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
# tests/test_dashboard.py loads /dashboard in a real headless browser: Debian's chromium, the build it was tested
# with (Debian's security archive keeps only its newest build: CHROMIUM_VERSION= installs that one instead).
if [ "$extra" = test ] && ! command -v chromium >/dev/null; then
    CHROMIUM_VERSION=${CHROMIUM_VERSION-156.0.8078.114-1~deb12u1}
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "chromium${CHROMIUM_VERSION:+=$CHROMIUM_VERSION}"
    else
        echo "chromium not installed (needs root and apt-get): tests/test_dashboard.py will skip" >&2
    fi
fi
