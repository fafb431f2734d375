"""Every confluent-kafka client jobpulse makes is built here, with one configuration rule.

The rule, for every producer, consumer and admin client (:func:`client_config`)::

    jobpulse's tunables  <  the user's pass-through settings  <  jobpulse's required settings

- *tunables*: jobpulse's defaults for performance (eager connections, batching, compression,
  fetch sizes, …).
  The user may change them.
- *pass-through*: ``JOBPULSE_KAFKA__<KEY>`` and ``JOBPULSE_KAFKA_CONFIG``
  (:attr:`Settings.kafka_config`, bootstrap servers included, through
  :meth:`Settings.kafka_client_config`): SASL/TLS and any other librdkafka setting.
- *required*: what a client's correctness depends on and the user may not weaken
  (``acks=all`` + idempotence for a producer that must not lose or duplicate, offsets kept
  by jobpulse rather than a consumer group, end-of-partition events for a reader that stops
  at the end, callbacks) — and the quiet logger, which every client gets.

librdkafka logs every refused connection itself (thousands of lines while a broker
restarts); jobpulse reports reachability once, in its own words. So every client logs to
:data:`QUIET`, a logger that drops everything.

The rest is what every Kafka user of the project needs once: :func:`error_code` and
:func:`error_text` unwrap a ``KafkaException`` safely, :func:`produce` waits while a
producer's local queue is full, :class:`ReadHealth` reports a reader's errors once per
state change. Topic administration is :mod:`jobpulse.topics`.

confluent-kafka is imported when a client is built, not with this module, so that commands
that never talk to Kafka start without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from jobpulse.errors import JobpulseError
from jobpulse.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient

#: The one logger of every librdkafka client: it drops everything (see the module docstring).
QUIET = logging.getLogger("jobpulse.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False

#: Every client's own tunable: connect to the bootstrap brokers at once. librdkafka's default
#: (sparse connections) connects only on a timer once a request needs a broker, which put
#: ≈ 50 ms before every client's first answer (a metadata request: 55 ms → 4 ms, measured),
#: several times on the way to a run's first record.
EVERY_CLIENT: Mapping[str, Any] = MappingProxyType({"enable.sparse.connections": False})

#: Required settings of a producer that must neither lose nor duplicate a record.
IDEMPOTENT: Mapping[str, Any] = MappingProxyType({"acks": "all", "enable.idempotence": True})

#: How long :func:`produce` lets deliveries drain a full local queue before trying again.
_FULL_QUEUE_POLL_S = 0.05

_Client = TypeVar("_Client")


def client_config(
    settings: Settings,
    *,
    required: Mapping[str, Any] | None = None,
    tunables: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka configuration: :data:`EVERY_CLIENT` and ``tunables`` < pass-through
    settings < ``required`` (and the quiet logger)."""
    return {
        **EVERY_CLIENT,
        **(tunables or {}),
        **settings.kafka_client_config(**{**(required or {}), "logger": QUIET}),
    }


def producer(
    settings: Settings,
    *,
    required: Mapping[str, Any] | None = None,
    tunables: Mapping[str, Any] | None = None,
    **callbacks: Callable[..., Any],
) -> Producer:
    """A ``Producer`` configured by :func:`client_config`; ``callbacks`` (``on_delivery``,
    ``error_cb``, …) are required settings."""
    from confluent_kafka import Producer

    return _build(Producer, "producer", settings, required, tunables, callbacks)


def consumer(
    settings: Settings,
    *,
    required: Mapping[str, Any] | None = None,
    tunables: Mapping[str, Any] | None = None,
    **callbacks: Callable[..., Any],
) -> Consumer:
    """A ``Consumer`` configured by :func:`client_config` (``group.id`` goes in ``required``)."""
    from confluent_kafka import Consumer

    return _build(Consumer, "consumer", settings, required, tunables, callbacks)


def admin(
    settings: Settings,
    *,
    required: Mapping[str, Any] | None = None,
    **callbacks: Callable[..., Any],
) -> AdminClient:
    """An ``AdminClient`` configured by :func:`client_config`."""
    from confluent_kafka.admin import AdminClient

    return _build(AdminClient, "client", settings, required, None, callbacks)


def _build(
    client: Callable[[dict[str, Any]], _Client],
    kind: str,
    settings: Settings,
    required: Mapping[str, Any] | None,
    tunables: Mapping[str, Any] | None,
    callbacks: Mapping[str, Callable[..., Any]],
) -> _Client:
    """``client(config)``; a configuration librdkafka refuses is one :class:`JobpulseError`."""
    from confluent_kafka import KafkaException

    config = client_config(settings, required={**(required or {}), **callbacks}, tunables=tunables)
    try:
        return client(config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise JobpulseError(f"Kafka {kind} configuration rejected: {error_text(exc)}") from None


def _kafka_error(exc: BaseException | KafkaError) -> KafkaError | None:
    """The ``KafkaError`` that ``exc`` is or wraps (``KafkaException(KafkaError)``), if any."""
    from confluent_kafka import KafkaError

    if isinstance(exc, KafkaError):
        return exc
    args = getattr(exc, "args", None)
    error = args[0] if isinstance(args, tuple) and args else None
    return error if isinstance(error, KafkaError) else None


def error_code(exc: BaseException | KafkaError) -> int | None:
    """The librdkafka error code of ``exc`` (a ``KafkaError`` or an exception wrapping one),
    ``None`` for any other exception."""
    error = _kafka_error(exc)
    return error.code() if error is not None else None


def error_text(exc: BaseException | KafkaError) -> str:
    """The human-readable text of ``exc``: librdkafka's own for a ``KafkaError`` or a
    ``KafkaException``, ``str(exc)`` for anything else."""
    error = _kafka_error(exc)
    return error.str() if error is not None else str(exc)


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    headers: Any = None,
    **kw: Any,
) -> None:
    """``producer.produce(...)``, waiting while the local queue is full: a ``BufferError`` is
    answered by polling, which serves delivery reports and so frees room, then it tries again.
    Any other error (``KafkaException``: message too large, …) is the caller's."""
    while True:
        try:
            if headers is None and not kw:  # positional: keywords cost a dict per call
                producer.produce(topic, value, key)
            else:
                producer.produce(topic, value, key, headers=headers, **kw)
            return
        except BufferError:
            producer.poll(_FULL_QUEUE_POLL_S)


class ReadHealth:
    """Whether a reader's consumers get errors: logged when that changes, never per error.

    Transient errors (a broker restart) are retried by librdkafka; the reader just waits.
    ``topic`` and ``waiting`` complete the lines ("reading {topic}: …; librdkafka retries,
    {waiting}"). Thread-safe: every worker of a process may report to one.
    """

    def __init__(self, topic: str, waiting: str, logger: logging.Logger) -> None:
        self.topic, self.waiting, self.log = topic, waiting, logger
        #: The metrics' label (``the offers topic`` → ``offers``).
        self.label = topic.removeprefix("the ").removesuffix(" topic")
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self.errors = 0

    def error(self, error: KafkaError, where: str = "") -> None:
        """One error (``where``: e.g. ``" (partition 3)"``, appended to the first line)."""
        from jobpulse import metrics  # (prometheus_client loads only where a reader runs)

        metrics.KAFKA_READ_ERRORS.labels(self.label).inc()
        with self._lock:
            self.errors += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                self.log.warning(
                    "reading %s: %s%s; librdkafka retries, %s",
                    self.topic,
                    error.str(),
                    where,
                    self.waiting,
                )

    def ok(self) -> None:
        """Records arrived: one line if errors came before."""
        if self._failing_since is None:
            return
        with self._lock:
            if self._failing_since is not None:
                self.log.warning(
                    "reading %s again after %.1f s (%d errors meanwhile)",
                    self.topic,
                    time.monotonic() - self._failing_since,
                    self.errors,
                )
                self._failing_since = None
                self.errors = 0
