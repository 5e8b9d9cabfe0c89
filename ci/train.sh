#!/usr/bin/env bash
# Set up .venv (once) and train BinaryConnect on its default config: the README's first command.
# Extra arguments go to the trainer, e.g. ci/train.sh --config mnist_cpu_det --seed 2
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
exec .venv/bin/python -m papers.binaryconnect train "$@"
