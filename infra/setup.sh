#!/usr/bin/env bash
# Installs everything eventvault's demo, tests and benchmarks need; safe to run again.
#   - Debian packages: kcat (an independent Kafka client the tests use), and Java 17 + Maven
#     if missing (they fetch and run the real Kafka broker)
#   - uv, a virtualenv in .venv with eventvault, its dev tools and Airflow (the extra airflow)
#   - Apache Kafka's jars from Maven Central into .cache/kafka (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v kcat >/dev/null || need+=(kcat)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "eventvault needs Python >= 3.11"'
# as root, pip warns about root; uv is all it installs, into the user's Python
command -v uv >/dev/null || PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$python" -m pip install -q uv
uv=$(command -v uv || echo "$python -m uv")
[ -x .venv/bin/python ] || $uv venv -q -p "$python" .venv
$uv pip install -q -p .venv/bin/python -e '.[dev,airflow]'
.venv/bin/python -m infra.kafka_local fetch >/dev/null
echo "setup complete: .venv, Kafka $(.venv/bin/python -c 'from infra.kafka_local import KAFKA_VERSION as v; print(v)'), $(kcat -V | head -1)"
