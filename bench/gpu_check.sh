#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) under a hard limit of 8 minutes, for a GPU machine lent for minutes:
#     bash bench/gpu_check.sh [gpu_check.py's flags]
# The script keeps to its own --budget (450 s by default) and prints the figures so far when a stage runs past it;
# the limit here stops everything at 480 s whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: CPU only"
exec timeout --signal=TERM --kill-after=15 480 "$PY" bench/gpu_check.py "$@"
