"""Every reason a record goes to the dead-letter topic, and the DLQ headers built for it."""

from __future__ import annotations

import json

import orjson
import pytest

from jobpulse.dataflows.dlq import (
    EXCEPTION_CLASS,
    EXCEPTION_MESSAGE,
    OFFSET,
    PARTITION,
    REASON,
    TOPIC,
    dlq_headers,
    header_map,
)
from jobpulse.offer import InvalidOffer, Op, Reason, parse_offer

#: (key, value, expected reason): one or more malformed records per reason.
MALFORMED: list[tuple[bytes | None, bytes | None, Reason]] = [
    (b"o-1", b"{not json", Reason.NOT_JSON),
    (b"o-1", None, Reason.NOT_JSON),
    (b"o-1", b"\xff\xfe", Reason.NOT_JSON),
    (b"o-1", b"[1, 2]", Reason.NOT_OBJECT),
    (b"o-1", b'"o-1"', Reason.NOT_OBJECT),
    (b"o-1", b"{}", Reason.MISSING_ID),
    (b"o-1", b'{"id": ""}', Reason.MISSING_ID),
    (b"o-1", b'{"id": "o-2"}', Reason.KEY_MISMATCH),
    (b"o-1", b'{"id": "o-1", "op": "archive"}', Reason.UNKNOWN_OP),
    (b"o-1", b'{"id": 1}', Reason.WRONG_TYPE),
    (b"o-1", b'{"id": "o-1", "category": 5}', Reason.WRONG_TYPE),
    (b"o-1", b'{"id": "o-1", "profession_id": "7"}', Reason.WRONG_TYPE),
    (b"o-1", b'{"id": "o-1", "profession_id": true}', Reason.WRONG_TYPE),
    (b"o-1", b'{"id": "o-1", "latitude": 48.8}', Reason.HALF_COORDINATES),
    (b"o-1", b'{"id": "o-1", "longitude": 2.3}', Reason.HALF_COORDINATES),
    (b"o-1", b'{"id": "o-1", "latitude": "48.8", "longitude": 2.3}', Reason.BAD_COORDINATE),
    (b"o-1", b'{"id": "o-1", "latitude": true, "longitude": 2.3}', Reason.BAD_COORDINATE),
    # NaN and overflowing numbers are not JSON (RFC 8259), so they never reach the range check.
    (b"o-1", b'{"id": "o-1", "latitude": NaN, "longitude": 2.3}', Reason.NOT_JSON),
    (b"o-1", b'{"id": "o-1", "latitude": 1e999, "longitude": 2.3}', Reason.NOT_JSON),
    (b"o-1", b'{"id": "o-1", "latitude": 90.5, "longitude": 2.3}', Reason.COORDINATE_OUT_OF_RANGE),
    (b"o-1", b'{"id": "o-1", "latitude": 0, "longitude": -180.1}', Reason.COORDINATE_OUT_OF_RANGE),
    (b"o-1", b'{"id": "o-1", "published_at": "yesterday"}', Reason.BAD_TIMESTAMP),
    (b"o-1", b'{"id": "o-1", "published_at": "2026-11-25T10:00:00"}', Reason.BAD_TIMESTAMP),
    (None, orjson.dumps({"id": "é" * 129}), Reason.TOO_LONG),  # 258 UTF-8 bytes
    (None, orjson.dumps({"id": "o", "category": "c" * 201}), Reason.TOO_LONG),
]


@pytest.mark.parametrize(("key", "value", "reason"), MALFORMED)
def test_malformed_record_is_rejected_with_its_reason(
    key: bytes | None, value: bytes | None, reason: Reason
) -> None:
    with pytest.raises(InvalidOffer) as caught:
        parse_offer(key, value)
    assert caught.value.reason is reason


def test_every_reason_is_exercised() -> None:
    assert {reason for _, _, reason in MALFORMED} == set(Reason)


@pytest.mark.parametrize(
    ("key", "body", "op", "has_coordinates"),
    [
        (b"o-1", {"id": "o-1"}, Op.UPSERT, False),
        (None, {"id": "o-1", "category": "Tech"}, Op.UPSERT, False),
        (b"o-1", {"id": "o-1", "op": "delete"}, Op.DELETE, False),
        (b"o-1", {"id": "o-1", "latitude": -90, "longitude": 180}, Op.UPSERT, True),
        (b"o-1", {"id": "o-1", "latitude": None, "longitude": None}, Op.UPSERT, False),
    ],
)
def test_valid_records_parse(
    key: bytes | None, body: dict[str, object], op: Op, has_coordinates: bool
) -> None:
    offer = parse_offer(key, orjson.dumps(body))
    assert offer.id == "o-1"
    assert offer.op is op
    assert offer.has_coordinates is has_coordinates


def test_dlq_headers_follow_kafka_connect_and_keep_the_original_headers() -> None:
    with pytest.raises(InvalidOffer) as caught:
        parse_offer(b"o-1", b'{"id": "o-1", "op": "archive"}')
    headers = dlq_headers("offers", 7, 1234, caught.value, [("trace", b"abc")])
    by_name = header_map(headers)
    assert by_name[TOPIC] == b"offers"
    assert by_name[PARTITION] == b"7"
    assert by_name[OFFSET] == b"1234"
    assert by_name[REASON] == b"unknown_op"
    assert by_name[EXCEPTION_CLASS] == b"jobpulse.offer.InvalidOffer"
    assert by_name[EXCEPTION_MESSAGE].startswith(b"unknown_op: ")
    assert b"archive" in by_name[EXCEPTION_MESSAGE]
    assert headers[-1] == ("trace", b"abc")
    assert all(name.startswith("__connect.errors.") for name, _ in headers[:-1])


def test_the_longest_allowed_id_and_category_are_accepted() -> None:
    from jobpulse.offer import MAX_CATEGORY_CHARS, MAX_ID_BYTES

    offer_id = "é" * (MAX_ID_BYTES // 2)  # exactly the limit, in UTF-8 bytes
    category = "c" * MAX_CATEGORY_CHARS
    offer = parse_offer(None, orjson.dumps({"id": offer_id, "category": category}))
    assert (offer.id, offer.category) == (offer_id, category)


def test_a_reason_never_echoes_a_whole_record() -> None:
    huge = "y" * 500_000
    for value in (
        orjson.dumps({"id": "o", "op": huge}),
        orjson.dumps({"id": "o", "latitude": huge, "longitude": 1}),
        orjson.dumps({"id": "o", "published_at": huge}),
    ):
        with pytest.raises(InvalidOffer) as caught:
            parse_offer(None, value)
        assert len(str(caught.value)) < 300
    with pytest.raises(InvalidOffer) as caught:
        parse_offer(huge.encode(), orjson.dumps({"id": "o"}))
    assert len(str(caught.value)) < 300


def test_dlq_message_header_is_bounded_and_stand_in_keeps_where_from() -> None:
    from jobpulse.dataflows.dlq import MAX_MESSAGE_BYTES, TRUNCATED, stand_in

    error = InvalidOffer(Reason.NOT_JSON, "z" * 10_000)
    headers = dlq_headers("offers", 3, 42, error, [("big", b"h" * 5000)])
    assert len(header_map(headers)[EXCEPTION_MESSAGE]) == MAX_MESSAGE_BYTES
    key, value, kept = stand_in(b"k" * 5000, b"v" * 2_000_000, headers)
    assert key == b"k" * 1024 and value == b"v" * 65536
    names = header_map(kept)
    assert "big" not in names
    assert (names[TOPIC], names[PARTITION], names[OFFSET]) == (b"offers", b"3", b"42")
    assert b"value 2000000 bytes" in names[TRUNCATED]


# -- the fast path (msgspec) decides exactly as the reference (orjson + validate_offer) --
def _outcome(parse: object, key: bytes | None, value: bytes | None) -> object:
    try:
        return parse(key, value)  # type: ignore[operator]
    except InvalidOffer as error:
        return (error.reason, error.detail)


VALID_BODY = {
    "id": "o-1",
    "op": "upsert",
    "category": "Tech",
    "profession_id": 17,
    "latitude": 48.8566,
    "longitude": 2.3522,
    "name": "Data engineer",
    "contract_type": "FULL_TIME",
    "published_at": "2026-11-25T10:00:00.123+01:00",
}

#: Values each field is tried with: right and wrong types, edges, oddities of JSON numbers.
ODD_VALUES: list[object] = [
    None,
    "",
    "x",
    "é" * 65,
    "c" * 201,
    0,
    -1,
    17,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    1.5,
    -0.0,
    90,
    90.0,
    90.000001,
    -180,
    180.0,
    1e-320,
    True,
    False,
    [],
    {},
    "upsert",
    "delete",
    "DELETE",
    "2026-11-25T10:00:00Z",
    "2026-11-25 10:00:00+00:00",
    "2026-11-25T10:00:00",
    "20261125T100000Z",
    "2026-11-25T10:00:00.123456789Z",
]


@pytest.mark.parametrize("field", list(VALID_BODY))
def test_fast_and_reference_paths_agree_on_every_odd_value_of_every_field(field: str) -> None:
    from jobpulse.offer import parse_offer_reference

    for odd in ODD_VALUES:
        body = {**VALID_BODY, field: odd}
        key = odd.encode() if field == "id" and isinstance(odd, str) else b"o-1"
        value = json.dumps(body).encode()  # orjson refuses integers beyond 64 bits
        assert _outcome(parse_offer, key, value) == _outcome(parse_offer_reference, key, value), (
            field,
            odd,
        )
        missing = {k: v for k, v in body.items() if k != field}
        value = json.dumps(missing).encode()
        assert _outcome(parse_offer, key, value) == _outcome(parse_offer_reference, key, value)


def test_fast_and_reference_paths_agree_on_the_malformed_table_and_fuzzed_bytes() -> None:
    import random

    from jobpulse.offer import parse_offer_reference

    for key, value, _ in MALFORMED:
        assert _outcome(parse_offer, key, value) == _outcome(parse_offer_reference, key, value)
    rng = random.Random(7)
    base = orjson.dumps(VALID_BODY)
    texts = [
        base,
        b'{"id":"o-1","latitude":48.85,"longitude":2.35,"id":"o-1"}',
        b'{"id":"o-1","latitude":1000000000000000000000000,"longitude":0}',
        b'{"id":"o-1","profession_id":99999999999999999999999}',
        b'{"id":"o-1","latitude":4.8850000000000000000001e1,"longitude":2.35}',
        b'{"id":"o-1","op":null}',
        b' {"id" : "o-1"} ',
    ]
    for text in texts:
        assert _outcome(parse_offer, b"o-1", text) == _outcome(parse_offer_reference, b"o-1", text)
    for _ in range(20_000):
        mutated = bytearray(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.4:
                mutated[position] = rng.choice(b'0123456789.-+eE"{}[],:ntfu\\ \xff')
            elif choice < 0.7:
                del mutated[position]
            else:
                mutated.insert(position, rng.randrange(256))
        value = bytes(mutated)
        assert _outcome(parse_offer, b"o-1", value) == _outcome(
            parse_offer_reference, b"o-1", value
        ), value
    # Random valid coordinates, as text with many digits: the same floats either way.
    for _ in range(20_000):
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        value = f'{{"id":"o-1","latitude":{lat!r},"longitude":{lon:.25f}}}'.encode()
        assert parse_offer(b"o-1", value) == parse_offer_reference(b"o-1", value)
