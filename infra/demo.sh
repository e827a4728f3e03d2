#!/usr/bin/env bash
# The main job end to end on the embedded default storage (./eventvault-archive):
# start a local Kafka broker, produce sample order events, archive them with
# `eventvault archive --once`, and query the archive with plain DuckDB. Stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
py=.venv/bin/python
state=.cache/demo-broker
trap '$py -m infra.kafka_local stop --state $state' EXIT
bootstrap=$($py -m infra.kafka_local start --state "$state")
echo "Kafka broker on $bootstrap"

$py -m infra.sample_events --bootstrap "$bootstrap" --topic shop.orders --count 20000 \
    --partitions 4 --hours 3

echo; echo "\$ eventvault archive --once --topic shop.orders"
EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS=$bootstrap .venv/bin/eventvault --log-level WARNING \
    archive --once --topic shop.orders

echo; echo "\$ find eventvault-archive -name '*.parquet' | sort | head -4"
find eventvault-archive -name '*.parquet' | sort | head -4

echo; echo "Query with plain DuckDB (hive partitioning, JSON in the value column):"
$py - <<'PY'
import duckdb
con = duckdb.connect()
print(con.sql("""
    SELECT topic, date, hour,
           json_extract_string(decode(value), '$.type') AS event_type,
           count(*) AS events
    FROM read_parquet('eventvault-archive/**/*.parquet', hive_partitioning = true)
    WHERE topic = 'shop.orders'
    GROUP BY ALL ORDER BY date, hour, events DESC
    LIMIT 8
"""))
PY
