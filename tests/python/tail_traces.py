"""Sends traces for the tail-sampling test through the Python OpenTelemetry SDK.

Each trace has a root span and two children. Every child of every trace is ended (and
exported) before any root, and the roots go in a second round of requests, so each trace's
spans reach the collector in separate requests and out of order. Trace i is an error trace
when i % 10 == 0 (its second child has status ERROR), a slow one when i % 10 == 1 (its root
lasts 6 s, by explicit timestamps), and a normal one otherwise.

Prints one JSON line: {"error": [...], "slow": [...], "normal": [...]} of hex trace ids.
"""

from __future__ import annotations

import argparse
import json
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--traces", type=int, default=2000)
    args = parser.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=args.endpoint, insecure=True),
        max_queue_size=20000,
        max_export_batch_size=500,
        schedule_delay_millis=200,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tail-test")

    now = time.time_ns()
    classes: dict[str, list[str]] = {"error": [], "slow": [], "normal": []}
    roots = []
    for i in range(args.traces):
        root = tracer.start_span("GET /checkout", start_time=now)
        ctx = set_span_in_context(root)
        for c in range(2):
            child = tracer.start_span(f"step {c}", context=ctx, start_time=now + 1_000_000)
            if i % 10 == 0 and c == 1:
                child.set_status(Status(StatusCode.ERROR, "payment declined"))
            child.end(end_time=now + 5_000_000)
        kind = "error" if i % 10 == 0 else "slow" if i % 10 == 1 else "normal"
        classes[kind].append(format(root.get_span_context().trace_id, "032x"))
        roots.append((root, 6_000_000_000 if kind == "slow" else 20_000_000))
    if not processor.force_flush(30_000):
        raise SystemExit("the children were not exported")
    time.sleep(0.5)
    for root, duration in roots:
        root.end(end_time=now + duration)
    if not processor.force_flush(30_000):
        raise SystemExit("the roots were not exported")
    provider.shutdown()
    print(json.dumps(classes))


if __name__ == "__main__":
    main()
