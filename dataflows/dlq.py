"""Dead-letter records: the rejected offers record, byte for byte, plus why and where from.

Headers follow Kafka Connect's dead-letter convention (``errors.deadletterqueue.context.
headers.enable``), so Connect tooling can read them, plus jobpulse's reason code:

==================================  =================================================
header                              value (UTF-8)
==================================  =================================================
``__connect.errors.topic``          source topic (the offers topic)
``__connect.errors.partition``      source partition, decimal
``__connect.errors.offset``         source offset, decimal
``__connect.errors.exception.class.name``  ``jobpulse.offer.InvalidOffer``
``__connect.errors.exception.message``     ``<reason>: <detail>``
``__connect.errors.reason``         the :class:`jobpulse.offer.Reason` code
==================================  =================================================

The record's own headers are kept after these.
"""

from __future__ import annotations

from jobpulse.offer import InvalidOffer

HEADER_PREFIX = "__connect.errors."
TOPIC = HEADER_PREFIX + "topic"
PARTITION = HEADER_PREFIX + "partition"
OFFSET = HEADER_PREFIX + "offset"
EXCEPTION_CLASS = HEADER_PREFIX + "exception.class.name"
EXCEPTION_MESSAGE = HEADER_PREFIX + "exception.message"
REASON = HEADER_PREFIX + "reason"

_EXCEPTION_CLASS_NAME = f"{InvalidOffer.__module__}.{InvalidOffer.__qualname__}".encode()

Headers = list[tuple[str, bytes]]


def dlq_headers(
    topic: str,
    partition: int,
    offset: int,
    error: InvalidOffer,
    original: Headers | None = None,
) -> Headers:
    """The headers of the dead-letter copy of one rejected record."""
    return [
        (TOPIC, topic.encode()),
        (PARTITION, str(partition).encode()),
        (OFFSET, str(offset).encode()),
        (EXCEPTION_CLASS, _EXCEPTION_CLASS_NAME),
        (EXCEPTION_MESSAGE, str(error).encode()),
        (REASON, error.reason.value.encode()),
        *(original or []),
    ]


def header_map(headers: Headers | None) -> dict[str, bytes]:
    """Headers as a dict (first value wins), for readers of the DLQ."""
    result: dict[str, bytes] = {}
    for name, value in headers or []:
        result.setdefault(name, value)
    return result
