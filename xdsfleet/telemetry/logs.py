"""structlog set-up: JSON lines for machines, a console renderer for people.

Everything the process writes to stderr goes through the same renderer: our events, the
standard `logging` records of the libraries (grpc, aiohttp, kubernetes, asyncio), exceptions
nobody caught (in the main thread, in other threads, and in asyncio callbacks), so that a JSON
log stream never carries a plain-text traceback a log pipeline would split into lines.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from types import TracebackType
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Run on every record, ours and the libraries' alike, before it is rendered.
_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(*, fmt: str = "json", level: str = "info") -> None:
    renderers: list[structlog.types.Processor]
    if fmt == "json":
        # A traceback as structured frames, inside the one JSON line of its event; without the
        # frames' local variables, which may hold a private key or a kubeconfig.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderers = [tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderers = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    number = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*_SHARED, *renderers],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(number)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


def _uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    log.critical("uncaught_exception", exc_info=(kind, error, traceback))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else None
    log.error(
        "thread_failed",
        thread=thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def asyncio_exception_handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Replaces asyncio's default handler, which prints plain text: what it reports (an
    exception in a callback, a task destroyed while pending) becomes one JSON event."""
    where = context.get("task") or context.get("future") or context.get("handle")
    log.error(
        "asyncio_error",
        message=context.get("message", ""),
        where=repr(where) if where is not None else None,
        exc_info=context.get("exception"),
    )
