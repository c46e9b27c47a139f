#!/usr/bin/env python3
"""Send traces, logs and (optionally) metrics to an OTLP endpoint with the
official OpenTelemetry Python SDK, so sluice's end-to-end tests can check that
a real third-party SDK's data arrives intact.

Usage:
    python send_otlp.py --endpoint http://127.0.0.1:4317 --protocol grpc \
        --service-name NAME --spans N --logs N [--metrics]

On success prints exactly one line of JSON to stdout:
    {"trace_id": "<32 hex>", "spans": N+1 (+1 with --pii), "logs": N (+2 with --pii), "metrics": true|false}
and exits 0. If any export fails (or exports fewer items than were produced),
it prints the reason to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from urllib.parse import urlparse

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

SCOPE_NAME = "sluice-e2e"

# With --pii: personal data and secrets where applications put them. The redaction test in
# tests/e2e/redaction.rs checks that none of these reaches a store, except NOT_A_CARD (its Luhn
# digit is wrong, so it is an order number rather than a card) and ALLOWED (an allowed value).
PII_EMAIL = "jane.roe@example.org"
PII_PHONE = "+1 415 555 2671"
PII_SSN = "123-45-6789"
PII_CARD = "4111 1111 1111 1111"
PII_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlLXZhbHVl"
PII_NOT_A_CARD = "4111 1111 1111 1112"
PII_ALLOWED = "support@sluice.example"
SCOPE_VERSION = "0.1"

# Always cumulative, whatever OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says.
CUMULATIVE = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


class ExportTally:
    """Records every export result reported by the OTLP exporters. The batch
    processors and the metric reader swallow these results, so the exporters
    are wrapped to see them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exported = {"traces": 0, "logs": 0, "metrics": 0}
        self.calls = {"traces": 0, "logs": 0, "metrics": 0}
        self.failures: list[str] = []

    def record(self, signal: str, count: int, ok: bool, detail: str = "") -> None:
        with self._lock:
            self.calls[signal] += 1
            if ok:
                self.exported[signal] += count
            else:
                self.failures.append(f"{signal}: export of {count} item(s) failed{detail}")


class TalliedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, tally: ExportTally) -> None:
        self._inner = inner
        self._tally = tally

    def export(self, spans):
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - report, then let the SDK see it
            self._tally.record("traces", len(spans), False, f": {exc!r}")
            raise
        self._tally.record("traces", len(spans), result == SpanExportResult.SUCCESS, f": {result}")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class TalliedLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, tally: ExportTally) -> None:
        self._inner = inner
        self._tally = tally

    def export(self, batch):
        try:
            result = self._inner.export(batch)
        except Exception as exc:  # noqa: BLE001
            self._tally.record("logs", len(batch), False, f": {exc!r}")
            raise
        self._tally.record("logs", len(batch), result == LogRecordExportResult.SUCCESS, f": {result}")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _count_data_points(metrics_data) -> int:
    return sum(
        len(metric.data.data_points)
        for rm in metrics_data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


class TalliedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, tally: ExportTally) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._tally = tally

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        points = _count_data_points(metrics_data)
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._tally.record("metrics", points, False, f": {exc!r}")
            raise
        self._tally.record("metrics", points, result == MetricExportResult.SUCCESS, f": {result}")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def build_exporters(protocol: str, endpoint: str, timeout: float, gzip: bool, tls=None):
    """Returns (span_exporter, log_exporter, metric_exporter) for the protocol, compressing with
    gzip (the SDK's only compression) when asked. With `tls` (ca_file, client_cert, client_key;
    the last two may be None), the exporters speak TLS, trusting that CA, and present the client
    certificate when given one (mutual TLS)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from grpc import Compression

        # The gRPC exporter wants host:port; strip any scheme/path.
        parsed = urlparse(endpoint)
        target = parsed.netloc if parsed.netloc else endpoint
        compression = Compression.Gzip if gzip else Compression.NoCompression
        common = dict(endpoint=target, insecure=True, timeout=timeout, compression=compression)
        if tls is not None:
            import grpc

            ca_file, client_cert, client_key = tls
            read = lambda path: open(path, "rb").read() if path else None
            common["insecure"] = False
            common["credentials"] = grpc.ssl_channel_credentials(
                root_certificates=read(ca_file),
                private_key=read(client_key),
                certificate_chain=read(client_cert),
            )
        return (
            OTLPSpanExporter(**common),
            OTLPLogExporter(**common),
            OTLPMetricExporter(preferred_temporality=CUMULATIVE, **common),
        )

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = endpoint.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    common = dict(timeout=timeout, compression=Compression.Gzip if gzip else Compression.NoCompression)
    if tls is not None:
        ca_file, client_cert, client_key = tls
        common["certificate_file"] = ca_file
        if client_cert:
            common["client_certificate_file"] = client_cert
            common["client_key_file"] = client_key
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", **common),
        OTLPLogExporter(endpoint=f"{base}/v1/logs", **common),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", preferred_temporality=CUMULATIVE, **common),
    )


def send_pii(tracer, logger, root) -> None:
    """One span and two log records carrying personal data everywhere it hides: span name,
    attributes (nested too), an event and its name, a link, the status message, a database
    statement with literals, and log bodies as text and as a map. Counted by the caller: one
    span, two logs."""
    from opentelemetry.trace import Link

    with tracer.start_as_current_span(
        f"notify {PII_EMAIL}",
        kind=SpanKind.CLIENT,
        links=[Link(root.get_span_context(), {"linked.by": PII_EMAIL})],
        attributes={
            "user.email": PII_EMAIL,
            "user.phone": PII_PHONE,
            "payment": f"card {PII_CARD} charged",
            "order.number": PII_NOT_A_CARD,
            "auth.header": f"Bearer {PII_JWT}",
            "support.email": PII_ALLOWED,
            "db.statement": f"SELECT * FROM users WHERE email = '{PII_EMAIL}' AND ssn = '{PII_SSN}'",
            "emails": [PII_EMAIL, "nobody"],
        },
    ) as span:
        span.add_event(f"mailed {PII_EMAIL}", attributes={"ssn": PII_SSN})
        span.set_status(Status(StatusCode.ERROR, f"card {PII_CARD} declined"))
    logger.emit(
        timestamp=time.time_ns(),
        body=f"login by {PII_EMAIL} from {PII_PHONE}, ssn {PII_SSN}",
        severity_number=SeverityNumber.INFO,
        attributes={"user": PII_EMAIL},
    )
    logger.emit(
        timestamp=time.time_ns(),
        body={"event": "payment", "card": PII_CARD, "customer": {"email": PII_EMAIL, "order": PII_NOT_A_CARD}},
        severity_number=SeverityNumber.INFO,
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http)")
    p.add_argument("--protocol", required=True, choices=["grpc", "http"])
    p.add_argument("--compression", choices=["none", "gzip"], default="none", help="how the exporters compress")
    p.add_argument("--pii", action="store_true", help="put personal data and secrets in spans, events, links and logs")
    p.add_argument("--service-name", required=True)
    p.add_argument("--spans", type=int, default=5, help="number of child spans (plus one root span)")
    p.add_argument("--logs", type=int, default=3, help="number of log records")
    p.add_argument("--metrics", action="store_true", help="also send one cumulative metrics export")
    p.add_argument("--timeout", type=float, default=10.0, help="per-export timeout in seconds (default 10)")
    p.add_argument("--ca-file", help="speak TLS, trusting this CA (PEM)")
    p.add_argument("--client-cert", help="with --ca-file: present this client certificate (PEM)")
    p.add_argument("--client-key", help="the client certificate's key (PEM)")
    args = p.parse_args(argv)
    if args.spans < 0 or args.logs < 0:
        p.error("--spans and --logs must be >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    timeout_ms = int(args.timeout * 1000) * 3

    resource = Resource.create(
        {
            "service.name": args.service_name,
            "service.version": "1.2.3",
            "deployment.environment.name": "test",
            "test.run": 42,
        }
    )
    tally = ExportTally()
    tls = (args.ca_file, args.client_cert, args.client_key) if args.ca_file else None
    span_exp, log_exp, metric_exp = build_exporters(
        args.protocol, args.endpoint, args.timeout, args.compression == "gzip", tls
    )

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(TalliedSpanExporter(span_exp, tally)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(TalliedLogExporter(log_exp, tally)))
    meter_provider = None
    if args.metrics:
        # An infinite interval starts no background thread, so the only
        # collection (and the only export) is the explicit force_flush below.
        reader = PeriodicExportingMetricReader(
            TalliedMetricExporter(metric_exp, tally),
            export_interval_millis=math.inf,
            export_timeout_millis=timeout_ms,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])

    tracer = tracer_provider.get_tracer(SCOPE_NAME, SCOPE_VERSION)
    logger = logger_provider.get_logger(SCOPE_NAME, SCOPE_VERSION)

    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        root_ctx = set_span_in_context(root)
        if args.pii:
            send_pii(tracer, logger, root)
        for i in range(args.spans):
            with tracer.start_as_current_span(
                f"op-{i}",
                context=root_ctx,
                kind=SpanKind.CLIENT,
                attributes={
                    "s": f"value-{i}",
                    "i": i,
                    "f": i + 0.5,
                    "b": i % 2 == 0,
                    "sa": ["x", "y"],
                    "ia": [1, 2, 3],
                },
            ) as span:
                if i == 1:
                    span.add_event(
                        "exception",
                        attributes={"exception.type": "ValueError", "exception.message": "boom"},
                    )
                    span.set_status(Status(StatusCode.ERROR, "boom"))
        # Emitted with the root span current, so each record carries its
        # trace id and span id. The timestamp is set explicitly, as the SDK's
        # logging-module bridge would (otherwise only observed time is set).
        for i in range(args.logs):
            logger.emit(
                timestamp=time.time_ns(),
                body=f"log-{i}",
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                attributes={"idx": i},
            )

    if meter_provider is not None:
        meter = meter_provider.get_meter(SCOPE_NAME, SCOPE_VERSION)
        counter = meter.create_counter("e2e.requests", unit="1", description="e2e request count")
        for _ in range(3):
            counter.add(1, {"route": "/a"})
        histogram = meter.create_histogram("e2e.latency", unit="ms", description="e2e latency")
        for v in (5, 15, 250):
            histogram.record(v)

    errors: list[str] = []
    if not tracer_provider.force_flush(timeout_ms):
        errors.append("traces: TracerProvider.force_flush returned False (timed out)")
    if not logger_provider.force_flush(timeout_ms):
        errors.append("logs: LoggerProvider.force_flush returned False (timed out)")
    if meter_provider is not None and not meter_provider.force_flush(timeout_ms):
        errors.append("metrics: MeterProvider.force_flush returned False (timed out)")

    tracer_provider.shutdown()
    logger_provider.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown(timeout_millis=timeout_ms)

    errors.extend(tally.failures)
    want_spans = args.spans + 1 + (1 if args.pii else 0)
    want_logs = args.logs + (2 if args.pii else 0)
    if tally.exported["traces"] != want_spans:
        errors.append(f"traces: {tally.exported['traces']} span(s) exported successfully, expected {want_spans}")
    if tally.exported["logs"] != want_logs:
        errors.append(f"logs: {tally.exported['logs']} log record(s) exported successfully, expected {want_logs}")
    if args.metrics:
        # e2e.requests: 1 point (route=/a); e2e.latency: 1 histogram point.
        if tally.calls["metrics"] != 1:
            errors.append(f"metrics: {tally.calls['metrics']} export call(s), expected exactly 1")
        if tally.exported["metrics"] != 2:
            errors.append(f"metrics: {tally.exported['metrics']} data point(s) exported successfully, expected 2")

    if errors:
        for e in errors:
            print(f"send_otlp.py: ERROR: {e}", file=sys.stderr)
        print(
            f"send_otlp.py: export to {args.endpoint} over {args.protocol} failed",
            file=sys.stderr,
        )
        return 1

    print(json.dumps({"trace_id": trace_id, "spans": want_spans, "logs": want_logs, "metrics": bool(args.metrics)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
