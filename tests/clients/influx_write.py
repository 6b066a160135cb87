"""Writes points to MetricStream's Influx endpoints with InfluxData's own Python client
(influxdb-client), as an agent would, and prints on stdout, as JSON, every sample it expects the
sink to hold and how the ingest answered a malformed write.

Usage: influx_write.py URL TOKEN RUN_ID POINTS
"""

import json
import sys

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

url, token, run_id, points = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
expected = []

with InfluxDBClient(url=url, token=token, org="metrics", timeout=20_000) as client:
    write_api = client.write_api(write_options=SYNCHRONOUS)
    # Nanosecond points in batches of 100: a float, an integer and a string field each.
    batch = []
    for i in range(points):
        ts_ns = 1_700_000_000_000_000_000 + i * 1_000_000 + 999_999
        tags = {"host": f"h{i % 7}", "run": run_id, "seq": str(i)}
        point = Point("cpu").time(ts_ns, WritePrecision.NS)
        for key, value in tags.items():
            point = point.tag(key, value)
        point = point.field("usage", i + 0.25).field("cores", i).field("state", "ok")
        batch.append(point)
        ts_ms = ts_ns // 1_000_000
        expected.append({"name": "cpu_usage", "value": i + 0.25, "timestamp": ts_ms, "tags": tags})
        expected.append({"name": "cpu_cores", "value": float(i), "timestamp": ts_ms, "tags": tags})
        if len(batch) == 100:
            write_api.write(bucket="b", record=batch, write_precision=WritePrecision.NS)
            batch = []
    if batch:
        write_api.write(bucket="b", record=batch, write_precision=WritePrecision.NS)

    # Second-precision line protocol as text, and a boolean field.
    lines = []
    for i in range(10):
        tags = {"run": run_id, "seq": f"s{i}"}
        lines.append(f"mem,run={run_id},seq=s{i} used={i}.5,swapping={'true' if i % 2 else 'false'} {1_700_000_000 + i}")
        expected.append({"name": "mem_used", "value": i + 0.5, "timestamp": (1_700_000_000 + i) * 1000, "tags": tags})
        expected.append({"name": "mem_swapping", "value": float(i % 2), "timestamp": (1_700_000_000 + i) * 1000, "tags": tags})
    write_api.write(bucket="b", record="\n".join(lines), write_precision=WritePrecision.S)

with InfluxDBClient(url=url, token=token, org="metrics", enable_gzip=True, timeout=20_000) as client:
    write_api = client.write_api(write_options=SYNCHRONOUS)
    tags = {"run": run_id, "seq": "gzip"}
    write_api.write(bucket="b", record=f"disk,run={run_id},seq=gzip free=42i 1700000000123", write_precision=WritePrecision.MS)
    expected.append({"name": "disk_free", "value": 42.0, "timestamp": 1_700_000_000_123, "tags": tags})

    # A malformed write: the client raises with InfluxDB's status and error body.
    refused = None
    try:
        write_api.write(bucket="b", record=f"bad,run={run_id} usage= 1", write_precision=WritePrecision.NS)
    except ApiException as error:
        refused = {"status": error.status, "body": json.loads(error.body)}

print(json.dumps({"expected": expected, "refused": refused}))
