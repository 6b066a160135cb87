"""Exports metrics to MetricStream's OTLP/HTTP endpoint with the OpenTelemetry Python SDK and its
OTLP/HTTP exporter (protobuf, gzip), as an instrumented service would, and prints on stdout, as
JSON, what each export returned and the window of time the points were taken in.

Usage: otlp_export.py ENDPOINT TOKEN RUN_ID
"""

import json
import sys
import time

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

endpoint, token, run_id = sys.argv[1], sys.argv[2], sys.argv[3]
results = []


class RecordingExporter(OTLPMetricExporter):
    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        results.append(result.name)
        return result


exporter = RecordingExporter(
    endpoint=endpoint,
    headers={"Authorization": f"Bearer {token}"},
    compression=Compression.Gzip,
)
# Exports only when flushed: the test decides when.
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
resource = Resource.create(
    {"service.name": "checkout", "service.instance.id": "instance-1", "host.name": "node-a"}
)
# No export at exit: the two flushes below are every export this run makes.
provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
meter = provider.get_meter("shop.meter", "0.1")

started_ms = int(time.time() * 1000)
orders = meter.create_counter("orders", unit="1")
in_flight = meter.create_up_down_counter("in_flight")
latency = meter.create_histogram("latency", unit="s")
temperature = meter.create_gauge("temperature")
attrs = {"run": run_id, "route": "/buy"}

orders.add(5, attrs)
in_flight.add(3, attrs)
in_flight.add(-1, attrs)
latency.record(0.3, attrs)
latency.record(7, attrs)
temperature.set(21.5, attrs)
provider.force_flush()

# Another millisecond, so the two collections never share a timestamp.
time.sleep(0.01)
orders.add(7, attrs)
latency.record(120, attrs)
provider.force_flush()
finished_ms = int(time.time() * 1000)

print(json.dumps({"results": results, "started_ms": started_ms, "finished_ms": finished_ms}))
