"""The OpenTelemetry SDK as a sender: log records, spans and metrics emitted through a real exporter.

Shared by the OTLP/HTTP and OTLP/gRPC tests, which differ only in the exporter they hand in
and in what they check of the records that arrive.
"""

from __future__ import annotations

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter


def emit_checkout_logs(exporter: LogExporter, count: int, *, padding: str = "",
                       batch_size: int | None = None) -> list[int]:
    """`count` records of service `checkout` through the SDK's batch processor, flushed in one go: every
    third one DEBUG, each body `rec-{n} token secret-{n}abc used{padding}`. The numbers of the others.

    `batch_size` is the processor's `max_export_batch_size` (None: the SDK's default, 512)."""
    limits = {} if batch_size is None else {"max_export_batch_size": batch_size}
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=60_000, **limits))
    logger = provider.get_logger("orders")
    kept = []
    for n in range(count):
        debug = n % 3 == 0
        if not debug:
            kept.append(n)
        logger.emit(severity_text="DEBUG" if debug else "INFO",
                    severity_number=SeverityNumber.DEBUG if debug else SeverityNumber.INFO,
                    body=f"rec-{n} token secret-{n}abc used{padding}")
    assert provider.force_flush(30_000)
    provider.shutdown()
    return kept


def emit_spans(exporter: SpanExporter, count: int, *, service: str = "orders", attributes: dict[str, str] | None = None,
               batch_size: int | None = None) -> list[str]:
    """`count` spans of tracer `orders` through the SDK's batch processor, flushed in one go: every fourth
    one named `drop-{n}`, the others `keep-{n}`. The names of the others.

    `batch_size` is the processor's `max_export_batch_size` (None: the SDK's default, 512)."""
    limits = {} if batch_size is None else {"max_export_batch_size": batch_size}
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000, **limits))
    tracer = provider.get_tracer("orders")
    kept = []
    for n in range(count):
        name = f"drop-{n}" if n % 4 == 0 else f"keep-{n}"
        if n % 4:
            kept.append(name)
        with tracer.start_as_current_span(name, attributes=attributes):
            pass
    assert provider.force_flush(30_000)
    provider.shutdown()
    return kept


def emit_order_metrics(exporter: MetricExporter) -> None:
    """Three instruments of service `orders` read once and exported: `drop.internal`, `orders.placed`
    (counters) and `orders.latency` (a histogram)."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "orders"}))
    meter = provider.get_meter("orders")
    meter.create_counter("drop.internal").add(3)
    meter.create_counter("orders.placed").add(5)
    meter.create_histogram("orders.latency").record(0.25)
    assert provider.force_flush(30_000)
    provider.shutdown()
