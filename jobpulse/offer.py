"""The offer message: what producers write to the offers topic (the seed's topic1).

Kafka key: the offer id, UTF-8. Kafka value: a JSON object::

    {"id": "o-42", "op": "upsert", "category": "Tech", "profession_id": 17,
     "latitude": 48.85, "longitude": 2.35, "name": "...", "contract_type": "FULL_TIME",
     "published_at": "2026-11-25T10:00:00Z"}

``op`` is ``"upsert"`` (default) or ``"delete"`` (closed/withdrawn; only ``id`` needed).
``category`` wins over ``profession_id``; latitude and longitude come both or neither.
:func:`parse_offer` is the one validator (:func:`validate_offer` is its second half, for a
value already decoded, e.g. the CSV import's rows); whatever it rejects goes to the
dead-letter topic with :attr:`InvalidOffer.reason`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec
import orjson

#: The category or continent of an offer that has none.
UNKNOWN = "Unknown"


class Op(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


class Offer(msgspec.Struct, frozen=True, gc=False):
    """One validated record of the offers topic (a frozen ``msgspec.Struct``: a few hundred
    nanoseconds to build, no cyclic-GC tracking; ``msgspec.structs.replace`` for a copy)."""

    id: str
    op: Op = Op.UPSERT
    category: str | None = None
    profession_id: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    contract_type: str | None = None
    #: Event time in epoch milliseconds from ``published_at``; ``None`` → the record's timestamp.
    published_at_ms: int | None = None

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None

    def key(self) -> bytes:
        return self.id.encode()

    def to_json(self) -> bytes:
        """The Kafka value; ``None`` fields are left out."""
        body: dict[str, Any] = {"id": self.id}
        if self.op is not Op.UPSERT:
            body["op"] = self.op.value
        for name in ("category", "profession_id", "latitude", "longitude", "name", "contract_type"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.published_at_ms is not None:
            body["published_at"] = format_rfc3339(self.published_at_ms)
        return orjson.dumps(body)


class Reason(StrEnum):
    """Why a record was sent to the dead-letter topic (the header's first word)."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_ID = "missing_id"
    KEY_MISMATCH = "key_mismatch"
    UNKNOWN_OP = "unknown_op"
    WRONG_TYPE = "wrong_type"
    HALF_COORDINATES = "half_coordinates"
    BAD_COORDINATE = "bad_coordinate"
    COORDINATE_OUT_OF_RANGE = "coordinate_out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TOO_LONG = "too_long"


#: Longest offer id, in UTF-8 bytes: the id travels in every delta (key and value) and in the
#: state, so an unbounded one could make a delta too large for Kafka.
MAX_ID_BYTES = 256
#: Longest category, in characters: it becomes a Redis field and travels in every delta.
MAX_CATEGORY_CHARS = 200


class InvalidOffer(ValueError):
    """A record that breaks the offer contract; ``str()`` is the full reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


_OPTIONAL_STRINGS = ("category", "name", "contract_type", "published_at")


class _Body(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """The value's JSON as msgspec decodes it (in C, validating types while it decodes): the
    field types the contract allows, nothing else checked yet. Unknown fields are refused
    (the reference path takes those values): msgspec skips an unknown field's value without
    the checks orjson makes, e.g. of a number that overflows."""

    id: str
    op: Op = Op.UPSERT
    category: str | None = None
    profession_id: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    contract_type: str | None = None
    published_at: str | None = None


_decode_body = msgspec.json.Decoder(_Body).decode
#: ``orjson`` (the reference decoder) reads integers outside int64 as floats or not at all.
_INT64 = range(-(2**63), 2**63)


def parse_offer(key: bytes | None, value: bytes | None) -> Offer:
    """Validate one Kafka record of the offers topic; raise :class:`InvalidOffer` if broken.

    Two paths, one contract. A typed msgspec decode plus the remaining checks accepts a
    well-formed offer in about a microsecond; anything it does not accept outright — every
    broken record, and the rare valid one outside its fast shape — goes through
    :func:`validate_offer` on the ``orjson`` decode, which decides and names the reason. So
    the fast path only ever returns what the reference would (``tests/test_parse.py``
    compares both on every case and on fuzzed records).
    """
    if value is not None:
        try:
            # Decoded to str first: msgspec skips unknown keys unchecked, orjson rejects the whole
            # value for one invalid UTF-8 byte anywhere.
            body = _decode_body(value.decode())
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            offer = _accept(body, key)
            if offer is not None:
                return offer
    return parse_offer_reference(key, value)


def _accept(body: _Body, key: bytes | None) -> Offer | None:
    """The offer when ``body`` passes every check of :func:`validate_offer`, else ``None``."""
    offer_id = body.id
    if not offer_id or (
        len(offer_id) > MAX_ID_BYTES // 4 and len(offer_id.encode()) > MAX_ID_BYTES
    ):
        return None
    if key is not None and key != offer_id.encode():
        return None
    published_at_ms = None
    if body.published_at is not None:
        try:
            published_at_ms = _published_at_ms(body.published_at)
        except InvalidOffer:
            return None
    if body.op is Op.DELETE:
        return Offer(id=offer_id, op=Op.DELETE, published_at_ms=published_at_ms)
    category = body.category
    if category is not None and len(category) > MAX_CATEGORY_CHARS:
        return None
    profession_id = body.profession_id
    if profession_id is not None and profession_id not in _INT64:
        return None
    latitude, longitude = body.latitude, body.longitude
    if (latitude is None) is not (longitude is None):
        return None
    if latitude is not None and not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
        return None
    return Offer(
        id=offer_id,
        op=Op.UPSERT,
        category=category or None,
        profession_id=profession_id,
        latitude=latitude,
        longitude=longitude,
        name=body.name,
        contract_type=body.contract_type,
        published_at_ms=published_at_ms,
    )


def parse_offer_reference(key: bytes | None, value: bytes | None) -> Offer:
    """The reference validator: ``orjson`` decode, then :func:`validate_offer` (every reason)."""
    if value is None:
        raise InvalidOffer(Reason.NOT_JSON, "the record has no value (tombstone)")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidOffer(Reason.NOT_JSON, f"value is not JSON ({exc})") from None
    return validate_offer(body, key)


def validate_offer(body: object, key: bytes | None = None) -> Offer:
    """:func:`parse_offer` for a value already decoded from JSON (or built as if it had been,
    e.g. from a CSV row): the same checks, the same :class:`InvalidOffer` reasons. ``key``
    ``None`` skips the key check."""
    if not isinstance(body, dict):
        raise InvalidOffer(Reason.NOT_OBJECT, f"value is a JSON {type(body).__name__}")

    offer_id = body.get("id")
    if offer_id is None or offer_id == "":
        raise InvalidOffer(Reason.MISSING_ID, "'id' is missing or empty")
    if not isinstance(offer_id, str):
        raise InvalidOffer(Reason.WRONG_TYPE, f"'id' must be a string, got {_kind(offer_id)}")
    # (64 characters are at most 256 UTF-8 bytes: only longer ids need encoding to check)
    if len(offer_id) > MAX_ID_BYTES // 4 and len(offer_id.encode()) > MAX_ID_BYTES:
        raise InvalidOffer(
            Reason.TOO_LONG,
            f"'id' is {len(offer_id.encode())} bytes, at most {MAX_ID_BYTES}",
        )
    if key is not None and key != offer_id.encode():
        raise InvalidOffer(
            Reason.KEY_MISMATCH,
            f"key {_excerpt(key.decode(errors='replace'))!r} != id {offer_id!r}",
        )

    op_raw = body.get("op", Op.UPSERT.value)
    try:
        op = Op(op_raw)
    except ValueError:
        raise InvalidOffer(
            Reason.UNKNOWN_OP, f"'op' must be upsert or delete, got {_excerpt(repr(op_raw))}"
        ) from None
    if op is Op.DELETE:
        return Offer(id=offer_id, op=op, published_at_ms=_published_at(body))

    for name in _OPTIONAL_STRINGS:
        field_value = body.get(name)
        if field_value is not None and not isinstance(field_value, str):
            raise InvalidOffer(
                Reason.WRONG_TYPE, f"'{name}' must be a string, got {_kind(field_value)}"
            )
    category = body.get("category")
    if category is not None and len(category) > MAX_CATEGORY_CHARS:
        raise InvalidOffer(
            Reason.TOO_LONG,
            f"'category' is {len(category)} characters, at most {MAX_CATEGORY_CHARS}",
        )
    profession_id = body.get("profession_id")
    if profession_id is not None and (
        not isinstance(profession_id, int) or isinstance(profession_id, bool)
    ):
        raise InvalidOffer(
            Reason.WRONG_TYPE, f"'profession_id' must be an integer, got {_kind(profession_id)}"
        )
    latitude, longitude = _coordinates(body)
    return Offer(
        id=offer_id,
        op=op,
        category=category or None,
        profession_id=profession_id,
        latitude=latitude,
        longitude=longitude,
        name=body.get("name"),
        contract_type=body.get("contract_type"),
        published_at_ms=_published_at(body),
    )


def _coordinates(body: dict[str, Any]) -> tuple[float | None, float | None]:
    lat, lon = body.get("latitude"), body.get("longitude")
    if lat is None and lon is None:
        return None, None
    if lat is None or lon is None:
        given = "latitude" if lon is None else "longitude"
        missing = "longitude" if lon is None else "latitude"
        raise InvalidOffer(Reason.HALF_COORDINATES, f"'{given}' given without '{missing}'")
    for name, number in (("latitude", lat), ("longitude", lon)):
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidOffer(
                Reason.BAD_COORDINATE, f"'{name}' is not a number: {_excerpt(repr(number))}"
            )
        if not math.isfinite(number):
            raise InvalidOffer(
                Reason.BAD_COORDINATE, f"'{name}' is not finite: {_excerpt(repr(number))}"
            )
    if not -90.0 <= lat <= 90.0:
        raise InvalidOffer(Reason.COORDINATE_OUT_OF_RANGE, f"latitude {lat} outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise InvalidOffer(Reason.COORDINATE_OUT_OF_RANGE, f"longitude {lon} outside [-180, 180]")
    return float(lat), float(lon)


def _published_at(body: dict[str, Any]) -> int | None:
    raw = body.get("published_at")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidOffer(Reason.WRONG_TYPE, f"'published_at' must be a string, got {_kind(raw)}")
    return _published_at_ms(raw)


def _published_at_ms(raw: str) -> int:
    """Epoch milliseconds of an RFC 3339 ``published_at`` with a UTC offset."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidOffer(
            Reason.BAD_TIMESTAMP, f"'published_at' is not RFC 3339: {_excerpt(repr(raw))}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidOffer(
            Reason.BAD_TIMESTAMP, f"'published_at' has no UTC offset: {_excerpt(repr(raw))}"
        )
    return int(moment.timestamp() * 1000)


def format_rfc3339(epoch_ms: int) -> str:
    """``2026-11-25T10:00:00.123Z`` for an epoch-milliseconds instant."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean", str: "string"}.get(
        type(value), type(value).__name__
    )


def _excerpt(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (an error message never echoes a whole record)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
