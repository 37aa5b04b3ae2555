"""JSON logs (structlog) carrying the service name, request id and trace id; stdlib logs go the same way."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.typing import FilteringBoundLogger

from microshop_kit.context import request_id_var, trace_var


def _add_context(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = request_id_var.get()
    if request_id and "request_id" not in event:
        event["request_id"] = request_id
    trace = trace_var.get()
    if trace is not None and "trace_id" not in event:
        event["trace_id"] = trace.trace_id
        event["span_id"] = trace.span_id
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class _StderrLogger:
    """structlog's output: one rendered line per call on the current ``sys.stderr``, looked up per call so a
    test capturing stderr sees the lines. No stdlib ``logging`` on this path: it cost ~0.3 ms per access-log
    line under load (a third of the gateway's CPU per proxied request, bench/README.md)."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _STDERR_LOGGER


_STDERR_LOGGER = _StderrLogger()


@dataclass
class _AccessLog:
    """How ``access_log`` renders: set by ``configure_logging``."""

    service: str = ""
    json: bool = False
    enabled: bool = True


_ACCESS = _AccessLog()


def access_log(**fields: Any) -> None:
    """One access-log line (``event: request``), the same JSON as a structlog line but rendered directly with
    orjson: it is written once per request, so it skips the processor chain (most of a line's cost, profiled)."""
    if not _ACCESS.enabled:
        return
    if not _ACCESS.json:
        get_logger("microshop.access").info("request", **fields)
        return
    line: dict[str, Any] = {"service": _ACCESS.service, "event": "request", **fields, "level": "info"}
    line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    request_id = request_id_var.get()
    if request_id:
        line["request_id"] = request_id
    trace = trace_var.get()
    if trace is not None:
        line["trace_id"] = trace.trace_id
        line["span_id"] = trace.span_id
    stream = sys.stderr
    stream.write(orjson.dumps(line, default=str).decode() + "\n")
    stream.flush()


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    """Route structlog and stdlib logging to one stream on stderr, one JSON object per line.

    The service's own structlog calls are rendered directly (filtered by level before any work); stdlib
    records (libraries: granian, asyncio, the broker clients) go through a handler with the same processors.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_context,
        lambda _, __, event: {"service": service, **event},
    ]
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    tracebacks: list[Any] = [structlog.processors.format_exc_info] if json else []
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    _ACCESS.service, _ACCESS.json, _ACCESS.enabled = service, json, numeric_level <= logging.INFO
    structlog.configure(
        processors=[*shared, *tracebacks, renderer],
        logger_factory=_stderr_logger,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in ("_granian", "granian", "granian.access", "asyncio", "aiormq", "aio_pika", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
