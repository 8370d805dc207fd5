"""The OpenTelemetry SDK as a sender: checkout log records emitted through a real exporter.

Shared by the OTLP/HTTP and OTLP/gRPC tests, which differ only in the exporter they hand in
and in what they check of the records that arrive.
"""

from __future__ import annotations

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogExporter
from opentelemetry.sdk.resources import Resource


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
