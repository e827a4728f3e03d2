#!/usr/bin/env bash
# The main job end to end on the embedded default storage (./eventvault-archive):
# start a local Kafka broker, produce sample order events, archive them with
# `eventvault archive --once`, query the archive with plain DuckDB and with `eventvault query`,
# then replay one hour of it onto a new topic and read that back with kcat. Stops the broker.
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
    FROM read_parquet('eventvault-archive/topic=*/*/*/*.parquet', hive_partitioning = true)
    WHERE topic = 'shop.orders'
    GROUP BY ALL ORDER BY date, hour, events DESC
    LIMIT 8
"""))
PY

echo; echo "\$ eventvault query \"SELECT value_json->>'\$.type' AS type, count(*) AS n FROM \\\"shop.orders\\\" WHERE timestamp >= '2026-11-01 01:00:00' AND timestamp < '2026-11-01 02:00:00' GROUP BY ALL ORDER BY n DESC\""
.venv/bin/eventvault query "SELECT value_json->>'\$.type' AS type, count(*) AS n FROM \"shop.orders\" WHERE timestamp >= '2026-11-01 01:00:00' AND timestamp < '2026-11-01 02:00:00' GROUP BY ALL ORDER BY n DESC"

target=shop.orders.replayed-$(date +%s)
$py - "$bootstrap" "$target" <<'PY'
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1])
    await admin.start()
    await admin.create_topics([NewTopic(sys.argv[2], 4, 1)])
    await admin.close()
asyncio.run(main())
PY
echo; echo "\$ eventvault replay --topic shop.orders --target $target --start 2026-11-01T01:00Z --end 2026-11-01T02:00Z --timestamp now"
EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS=$bootstrap .venv/bin/eventvault --log-level WARNING replay \
    --topic shop.orders --target "$target" --start 2026-11-01T01:00Z --end 2026-11-01T02:00Z \
    --timestamp now

echo; echo "\$ kcat -C -b $bootstrap -t $target -p 0 -o beginning -c 2 -f '%p %o %k %h\\n'"
kcat -C -b "$bootstrap" -t "$target" -p 0 -o beginning -c 2 -q -f '%p %o %k %h\n'
echo "records on $target: $(kcat -C -b "$bootstrap" -t "$target" -o beginning -e -q -f 'x\n' | wc -l)"

# Erasure end to end: the most frequent customer of the demo is a data subject to erase.
export EVENTVAULT_ERASURE__HMAC_KEY=demo-only-key
export EVENTVAULT_ERASURE__TOPICS='{"shop.orders": {"location": "value", "field": "order.customer.id", "action": "redact", "redact": ["order.customer.email", "order.customer.name", "device.ip"]}}'
subject=$(.venv/bin/eventvault query --format csv "SELECT value_json->>'\$.order.customer.id' AS c, count(*) AS n FROM \"shop.orders\" GROUP BY c ORDER BY n DESC, c LIMIT 1" | tail -1 | cut -d, -f1)
count_sql="SELECT count(*) AS records_naming_${subject} FROM \"shop.orders\" WHERE regexp_matches(value_text, '\\b${subject}\\b')"
echo; echo "\$ eventvault query \"$count_sql\""
.venv/bin/eventvault query "$count_sql"
echo; echo "\$ eventvault erase --request-id demo-1 --subject $subject"
EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS=$bootstrap .venv/bin/eventvault --log-level WARNING erase \
    --request-id demo-1 --subject "$subject"
echo; echo "\$ eventvault query \"$count_sql\""
.venv/bin/eventvault query "$count_sql"
ledger_sql="SELECT entry, request_id, left(subject_hash, 12) AS subject, coalesce(split_part(object_key, '/', 3), target_topic) AS hour_or_recipient, rows_redacted AS redacted, verified FROM maintenance_ledger ORDER BY entry DESC, hour_or_recipient"
echo; echo "\$ eventvault query \"$ledger_sql\""
.venv/bin/eventvault query "$ledger_sql"
