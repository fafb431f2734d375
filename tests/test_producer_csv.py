"""CSV import: parsing awkward rows, stable ids, malformed rows (pure functions, no Kafka)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from jobpulse.errors import UsageError
from jobpulse.offer import MAX_CATEGORY_CHARS, MAX_ID_BYTES, Offer, parse_offer
from jobpulse.producer.csv_import import CsvRow, RowError, decode_lines, read_rows, stable_id

HEADER = "profession_id,contract_type,name,office_latitude,office_longitude\n"
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wttj"


def parse(text: str, **kwargs: object) -> list[CsvRow | RowError]:
    return list(read_rows(io.StringIO(text, newline=""), **kwargs))  # type: ignore[arg-type]


def offers(text: str, **kwargs: object) -> list[Offer]:
    items = parse(text, **kwargs)
    assert all(isinstance(i, CsvRow) for i in items), items
    return [i.offer for i in items]  # type: ignore[union-attr]


def test_awkward_fields_quotes_commas_tabs_and_newlines() -> None:
    text = HEADER + (
        '7,FULL_TIME,"Sales, Retail & ""Luxury"" (H/F)",48.85,2.35\n'
        "3,INTERNSHIP,Stage\tData\tEngineer,45.76,4.83\n"
        '12,APPRENTICESHIP,"Two\nlines",-33.87,151.21\n'
        "5,FULL_TIME,  padded name  ,1.5,-2.5\n"
    )
    got = offers(text)
    assert [o.name for o in got] == [
        'Sales, Retail & "Luxury" (H/F)',
        "Stage\tData\tEngineer",
        "Two\nlines",
        "  padded name  ",
    ]
    assert [o.profession_id for o in got] == [7, 3, 12, 5]
    assert (got[2].latitude, got[2].longitude) == (-33.87, 151.21)
    assert got[1].contract_type == "INTERNSHIP"


def test_empty_fields_mean_missing() -> None:
    text = HEADER + ",FULL_TIME,No profession,48.85,2.35\n17,,,,\n"
    first, second = offers(text)
    assert first.profession_id is None and first.latitude == 48.85
    assert second.profession_id == 17
    assert second.latitude is None and second.longitude is None
    assert second.name is None and second.contract_type is None
    # Missing values are left out of the message (the contract's "neither" case).
    assert b"latitude" not in second.to_json() and b"name" not in second.to_json()


def test_a_row_of_only_empty_fields_is_malformed_not_an_offer() -> None:
    items = parse(HEADER + ",,,,\n" + "3,FULL_TIME,Dev,1,1\n")
    assert isinstance(items[0], RowError) and items[0].line == 2
    assert "every field is empty" in str(items[0])
    assert isinstance(items[1], CsvRow)


def test_line_numbers_point_at_the_start_of_each_malformed_row() -> None:
    text = HEADER + (
        '1,FULL_TIME,"multi\nline",1,1\n'  # lines 2-3, valid
        "x7,FULL_TIME,bad profession,1,1\n"  # line 4
        "1,FULL_TIME,half coordinates,48.8,\n"  # line 5
        "1,FULL_TIME,not a number,north,2\n"  # line 6
        "1,FULL_TIME,too many,1,2,3\n"  # line 7
        "1,FULL_TIME,too few\n"  # line 8
        "1,FULL_TIME,out of range,91,2\n"  # line 9
        "1,FULL_TIME,nan,nan,2\n"  # line 10
        "\n"  # line 11: blank, ignored
        "2,FULL_TIME,fine,1,2\n"  # line 12
    )
    items = parse(text)
    errors = {i.line: i.message for i in items if isinstance(i, RowError)}
    rows = [i.line for i in items if isinstance(i, CsvRow)]
    assert rows == [2, 12]
    assert sorted(errors) == [4, 5, 6, 7, 8, 9, 10]
    assert "profession_id is not an integer" in errors[4]
    assert "'latitude' given without 'longitude'" in errors[5]  # the offer contract's words
    assert "latitude is not a number" in errors[6]
    assert "6 fields, the header has 5" in errors[7]
    assert "3 fields, the header has 5" in errors[8]
    assert "outside [-90, 90]" in errors[9]
    assert "not finite" in errors[10]
    assert str(RowError(4, "x")) == "line 4: x"


def test_rows_are_checked_by_the_offer_contract() -> None:
    """The import validates with the contract's validator: what it sends parses as itself in
    the dataflow, and what the dataflow would dead-letter is reported here instead."""
    text = "ref,category,latitude,longitude\n"
    text += f"{'i' * (MAX_ID_BYTES + 1)},Tech,1,2\n"  # line 2: id too long
    text += f"ok-1,{'c' * (MAX_CATEGORY_CHARS + 1)},1,2\n"  # line 3: category too long
    text += "ok-2,Tech,-90,180\n"  # line 4: the range's ends are valid
    text += "ok-3,Tech,inf,2\n"  # line 5: not finite
    text += "ok-4,Tech,1,-180.5\n"  # line 6: out of range
    items = parse(text, id_column="ref")
    errors = {i.line: i.message for i in items if isinstance(i, RowError)}
    assert f"'id' is {MAX_ID_BYTES + 1} bytes, at most {MAX_ID_BYTES}" in errors[2]
    assert f"'category' is {MAX_CATEGORY_CHARS + 1} characters" in errors[3]
    assert "'latitude' is not finite" in errors[5]
    assert "longitude -180.5 outside [-180, 180]" in errors[6]
    [row] = [i for i in items if isinstance(i, CsvRow)]
    assert row.line == 4 and row.offer == parse_offer(row.offer.key(), row.offer.to_json())


def test_broken_quoting_is_reported_and_parsing_goes_on() -> None:
    text = HEADER + '1,FULL_TIME,"stray"quote,1,1\n2,FULL_TIME,ok,1,1\n'
    first, second = parse(text)
    assert isinstance(first, RowError) and first.line == 2
    assert isinstance(second, CsvRow) and second.offer.profession_id == 2


def test_ids_are_stable_and_exact_duplicates_stay_distinct() -> None:
    text = HEADER + (
        "1,FULL_TIME,Same,1,1\n2,FULL_TIME,Other,1,1\n1,FULL_TIME,Same,1,1\n1,FULL_TIME,Same,1,1\n"
    )
    ids = [o.id for o in offers(text)]
    assert ids == [o.id for o in offers(text)]  # same file → same ids
    assert len(set(ids)) == 4  # duplicates are separate offers
    same = stable_id(["1", "FULL_TIME", "Same", "1", "1"], 1)
    assert ids[0] == same
    assert ids[2] == same[:-1] + "2" and ids[3] == same[:-1] + "3"
    # An id depends only on the row's content and its occurrence, not on its position.
    shifted = offers(HEADER + "9,TEMPORARY,Inserted,0,0\n" + text.removeprefix(HEADER))
    assert [o.id for o in shifted][1:] == ids


def test_id_column_and_extra_columns() -> None:
    text = "ref,profession_id,name,latitude,longitude,category,ignored\n"
    text += "A-1,3,Dev,1,2,Tech,x\n , 3,Dev,1,2,Tech,x\nA-1,4,Dev moved,5,6,,y\n"
    items = parse(text, id_column="REF")
    assert isinstance(items[0], CsvRow) and items[0].offer.id == "A-1"
    assert items[0].offer.category == "Tech"
    assert isinstance(items[1], RowError) and "id column is empty" in items[1].message
    assert isinstance(items[2], CsvRow) and items[2].offer.id == "A-1"
    assert items[2].offer.category is None and items[2].offer.latitude == 5.0


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("", {}, "empty"),
        ("a,b,c\n1,2,3\n", {}, "none of the expected columns"),
        ("name,office_latitude\nx,1\n", {}, "only one of the latitude/longitude"),
        ("name,name\nx,y\n", {}, "repeats a column"),
        (HEADER, {"id_column": "job_id"}, "--id-column 'job_id' is not in the CSV header"),
    ],
)
def test_unusable_headers_raise(text: str, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(text, **kwargs)


def test_decoding_names_the_line_and_drops_the_bom() -> None:
    lines = list(decode_lines([b"\xef\xbb\xbfprofession_id,name\n", b"1,Cr\xc3\xa9a\n"]))
    assert lines == ["profession_id,name\n", "1,Créa\n"]
    with pytest.raises(UsageError, match="line 2 is not UTF-8"):
        list(decode_lines([b"profession_id,name\n", b"1,Cr\xe9a\n"]))


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="public data set ../shared/data/wttj absent")
def test_public_jobs_file_parses_completely() -> None:
    with (DATA_DIR / "technical-test-jobs.csv").open("rb") as stream:
        items = list(read_rows(decode_lines(stream)))
    rows = [i for i in items if isinstance(i, CsvRow)]
    assert len(rows) == len(items) == 5069
    assert len({r.offer.id for r in rows}) == 5069
    # SOURCE.md: 30 rows duplicate another row; 43 lack coordinates; 69 lack a profession.
    assert sum(not r.offer.id.endswith("-1") for r in rows) == 30
    assert sum(r.offer.latitude is None for r in rows) == 43
    assert sum(r.offer.profession_id is None for r in rows) == 69
    assert sum("\t" in (r.offer.name or "") for r in rows) == 3
