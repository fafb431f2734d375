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

The record's own headers are kept after these. What the DLQ adds is bounded (the message
header is cut to :data:`MAX_MESSAGE_BYTES`), so a dead-letter copy is at most a little larger
than the record. A record that still cannot be written as is (larger than the producer or the
topic accepts) is replaced by a bounded :func:`stand_in` that keeps where it came from and
why, with a :data:`TRUNCATED` header: it is never lost silently, and the original stays in the
offers topic at the partition and offset the headers name.
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
#: On a stand-in only: what was cut from the original record.
TRUNCATED = "__jobpulse.dlq.truncated"

#: Longest exception message header, in bytes.
MAX_MESSAGE_BYTES = 1000
#: What a stand-in keeps of the original key and value, in bytes.
STAND_IN_KEY_BYTES = 1024
STAND_IN_VALUE_BYTES = 64 * 1024

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
        (EXCEPTION_MESSAGE, _cut(str(error).encode(), MAX_MESSAGE_BYTES)),
        (REASON, error.reason.value.encode()),
        *(original or []),
    ]


def stand_in(
    key: bytes | None, value: bytes | None, headers: Headers | None
) -> tuple[bytes | None, bytes | None, Headers]:
    """A bounded dead-letter record for one too large to write: the DLQ's own headers (each
    cut to :data:`MAX_MESSAGE_BYTES`), the start of the key and value, and a
    :data:`TRUNCATED` header saying what was cut."""
    own = [(n, _cut(v, MAX_MESSAGE_BYTES)) for n, v in headers or [] if n.startswith(HEADER_PREFIX)]
    dropped = len(headers or []) - len(own)
    note = (
        f"key {len(key or b'')} bytes, value {len(value or b'')} bytes, {dropped} original "
        f"header(s): kept the first {STAND_IN_KEY_BYTES} and {STAND_IN_VALUE_BYTES} bytes "
        "and no original header; the record is whole at the offers partition/offset above"
    )
    return (
        None if key is None else key[:STAND_IN_KEY_BYTES],
        None if value is None else value[:STAND_IN_VALUE_BYTES],
        [*own, (TRUNCATED, note.encode())],
    )


def _cut(data: bytes, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, marked when cut."""
    if len(data) <= limit:
        return data
    marker = f"… [{len(data)} bytes]".encode()
    return data[: limit - len(marker)] + marker


def header_map(headers: Headers | None) -> dict[str, bytes]:
    """Headers as a dict, for readers of the DLQ (Kafka clients give a list of pairs).

    The first value wins: :func:`dlq_headers` puts the DLQ's own headers before the record's,
    which may carry the same names (a record re-sent from another dead-letter topic)."""
    result: dict[str, bytes] = {}
    for name, value in headers or []:
        result.setdefault(name, value)
    return result
