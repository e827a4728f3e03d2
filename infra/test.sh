#!/usr/bin/env bash
# Sets everything up, then runs the linters and the whole test suite (unit and integration:
# the suite starts and stops its own Kafka broker and S3 server on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
.venv/bin/ruff check eventvault archiver replay dags infra tests bench
.venv/bin/python -m infra.typecheck
exec .venv/bin/python -m pytest "$@"
