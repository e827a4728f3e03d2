"""The Airflow DAGs: they parse (DagBag), and `dag.test()` runs them against the real broker and
the S3 server with versioning on, in a throwaway AIRFLOW_HOME with its SQLite database.

Airflow reads its configuration when imported, so each check runs in an interpreter of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import boto3
import pytest

from eventvault.layout import hour_dir
from tests.cliutil import cli_env
from tests.erasureutil import customer, customer_records, erasure_env, every_version, mentions
from tests.kafkautil import REPO, Rec, archive_once, create_topic, produce, settings

_DAGBAG = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": {i: {"tasks": sorted(t.task_id for t in d.tasks),
                               "max_active_runs": d.max_active_runs, "doc": bool(d.doc_md),
                               "params": {k: d.params[k] for k in d.params}}
                           for i, d in bag.dags.items()}}))
"""

_TEST = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder="dags").get_dag(sys.argv[1])
run = dag.test(run_conf=json.loads(sys.argv[2]))
print("STATE", run.state)
"""


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway AIRFLOW_HOME, its SQLite database migrated, DAGs from dags/."""
    home = tmp_path_factory.mktemp("airflow")
    env = cli_env({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                   "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                   "AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=REPO,
                   check=True, capture_output=True, timeout=300)
    return env


def _dag_test(env: dict[str, str], dag_id: str, conf: dict[str, object],
              extra: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-c", _TEST, dag_id, json.dumps(conf)],
                         env={**env, **extra}, cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=False)
    state = [line for line in res.stdout.splitlines() if line.startswith("STATE")]
    assert state, res.stdout[-3000:] + res.stderr[-3000:]
    return state[-1].split()[-1]


def test_the_dags_parse_with_their_tasks_and_params(airflow_env: dict[str, str]) -> None:
    res = subprocess.run([sys.executable, "-c", _DAGBAG], env=airflow_env, cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    erasure, retention = found["dags"]["eventvault_erasure"], found["dags"]["eventvault_retention"]
    assert erasure["tasks"] == ["erase", "files", "find", "finish", "register", "topics"]
    assert retention["tasks"] == ["delete", "finish", "hours", "plan", "start", "topics"]
    for dag in (erasure, retention):
        assert dag["max_active_runs"] == 1
        assert dag["doc"]
        assert dag["params"]["dry_run"] is True, "destructive DAGs default to a dry run"
    assert erasure["params"]["requests"] == []


@pytest.mark.integration
def test_the_erasure_dag_erases_every_version(airflow_env: dict[str, str], kafka_bootstrap: str,
                                              s3_endpoint: str, versioned_bucket: str) -> None:
    topic = f"dag.orders-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produced = produce(kafka_bootstrap, topic, customer_records(300, 20, 2))
    url = f"s3://{versioned_bucket}/arch"
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=s3_endpoint,
                          max_file_records=40))
    env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "EVENTVAULT_STORAGE__URL": url,
           "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint,
           "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}", **erasure_env(topic)}
    subject = customer(6)
    requests = [{"request_id": "DAG-1", "subject": subject}]
    before = every_version(s3_endpoint, versioned_bucket, "arch/")
    assert _dag_test(airflow_env, "eventvault_erasure", {"requests": requests}, env) == "success"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert "Contents" not in client.list_objects_v2(Bucket=versioned_bucket,
                                                    Prefix="arch/_erasure/")
    assert [v["version"] for v in every_version(s3_endpoint, versioned_bucket, "arch/")] == [
        v["version"] for v in before]

    assert _dag_test(airflow_env, "eventvault_erasure",
                     {"requests": requests, "dry_run": False}, env) == "success"
    versions = every_version(s3_endpoint, versioned_bucket, "arch/")
    assert sorted(v["key"] for v in versions) == sorted(v["key"] for v in before)
    assert all(v["latest"] for v in versions)
    rows = [r for v in versions for r in v["rows"]]
    assert mentions(rows, subject) == []
    theirs = {at for at, rec in produced.items() if subject.encode() in (rec.value or b"")}
    assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(set(produced) - theirs)
    ledger = client.list_objects_v2(Bucket=versioned_bucket, Prefix="arch/_erasure/ledger/")
    assert len(ledger["Contents"]) == 1


@pytest.mark.integration
def test_the_retention_dag_deletes_expired_hours(airflow_env: dict[str, str],
                                                 kafka_bootstrap: str, s3_endpoint: str,
                                                 versioned_bucket: str) -> None:
    topic = f"dag.ret-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=1)
    old_hour, recent = 438_288, int(time.time() * 1000) - 3_600_000
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"old", (), old_hour * 3_600_000 + i)
                                     for i in range(5)]
            + [Rec(0, b"k", b"new", (), recent + i) for i in range(5)])
    url = f"s3://{versioned_bucket}/arch"
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=s3_endpoint))
    env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "EVENTVAULT_STORAGE__URL": url,
           "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint,
           "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}",
           "EVENTVAULT_RETENTION__KEEP_DAYS": json.dumps({topic: 7})}
    assert _dag_test(airflow_env, "eventvault_retention", {}, env) == "success"
    assert len(every_version(s3_endpoint, versioned_bucket, "arch/")) == 2, "a dry run keeps all"
    assert _dag_test(airflow_env, "eventvault_retention", {"dry_run": False}, env) == "success"
    left = every_version(s3_endpoint, versioned_bucket, "arch/")
    assert [v["key"].startswith(hour_dir(topic, old_hour)) for v in left] == [False]
    assert [r["value"] for r in left[0]["rows"]] == [b"new"] * 5
