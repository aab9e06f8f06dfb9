"""Loading, validating and splitting labelled ticket data (connector.model.data)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from connector.model.data import (
    DataError,
    LabeledData,
    load_labeled_bytes,
    load_labeled_file,
    split,
    validate_data,
)
from connector.text import ticket_text
from tests.support.paths import SAMPLE_TICKETS


GOOD_ROWS = [
    ("Printer broken", "The printer on floor 2 jams.", "Hardware", "normal"),
    ("Laptop dead", "My laptop does not start.", "Hardware", "high"),
    ("Password reset", "I am locked out of my account.", "Access", "high"),
    ("VPN access", "Please give me VPN access.", "Access", "low"),
    ("Invoice wrong", "Invoice 42 charges too much.", "Billing", "normal"),
    ("Refund", "We paid twice so please refund.", "Billing", "low"),
]


def write_csv(path: Path, header: str, rows: list[str], *, encoding: str = "utf-8", bom: bool = False) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    data = text.encode(encoding)
    if bom:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)
    return path


def good_rows() -> list[str]:
    return [",".join(r) for r in GOOD_ROWS]


def good_csv(path: Path, rows: list[str] | None = None, **options) -> Path:
    """A ``subject,body,queue,priority`` file of ``rows`` (default: the good rows)."""
    return write_csv(path, "subject,body,queue,priority", good_rows() if rows is None else rows, **options)


def test_sample_data_loads_with_six_queues_three_priorities_and_three_languages() -> None:
    data = load_labeled_file(SAMPLE_TICKETS)
    assert 380 <= len(data) <= 450
    assert set(data.labels_of("queue")) == {"Hardware", "Software", "Access", "Network", "HR", "Billing"}
    assert set(data.labels_of("priority")) == {"low", "normal", "high"}
    joined = " ".join(data.texts)
    assert "Drucker" in joined and "imprimante" in joined.lower() and "printer" in joined.lower()


def test_text_is_cleaned_with_the_routing_engines_function(tmp_path: Path) -> None:
    body = "Hello,\n\nmy   printer is broken.\n\nBest regards,\nAnna\n> old quoted text"
    path = tmp_path / "t.csv"
    path.write_text(
        'subject,body,queue\nPrinter,"' + body + '",Hardware\nOther,"x y",Access\nThird,"z",Hardware\nFourth,"w",Access\n',
        encoding="utf-8",
    )
    data = load_labeled_file(path)
    assert data.texts[0] == ticket_text("Printer", body)
    assert "Anna" not in data.texts[0] and "quoted" not in data.texts[0]
    assert data.fields == ("queue",)


def test_text_column_and_renamed_label_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        "Document,Topic_group,Prio",
        ["printer jams,Hardware,1", "screen broken,Hardware,2", "password reset,Access,1", "vpn access,Access,2"],
    )
    data = load_labeled_file(path, text_column="Document", label_columns=["queue=Topic_group", "Prio"])
    assert data.fields == ("queue", "Prio")
    assert data.label_counts("queue") == {"Access": 2, "Hardware": 2}
    assert data.texts[0] == "printer jams"


def test_sample_data_also_loads_as_text_queue_priority(tmp_path: Path) -> None:
    from connector.sample_data.generate import write_text_variant

    path = write_text_variant(tmp_path / "tickets_text.csv")
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header == "text,queue,priority"
    data = load_labeled_file(path, text_column="text")
    assert len(data) == len(load_labeled_file(SAMPLE_TICKETS))
    assert set(data.fields) == {"queue", "priority"}


def test_missing_column_names_the_column_and_line_1(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "subject,body,priority", ["a,b,low", "c,d,high"])
    with pytest.raises(DataError) as err:
        load_labeled_file(path, label_columns=["queue"])
    assert err.value.line == 1
    assert err.value.column == "queue"
    assert "missing column 'queue'" in str(err.value)


def test_missing_text_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "title,queue", ["a,X", "b,Y"])
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert err.value.column == "text"


def test_extra_unused_columns_are_ignored(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        "id,subject,body,queue,priority,owner",
        [f"{i},{s},{b},{q},{p},someone" for i, (s, b, q, p) in enumerate(GOOD_ROWS)],
    )
    data = load_labeled_file(path)
    assert len(data) == len(GOOD_ROWS)
    assert data.fields == ("queue", "priority")


@pytest.mark.parametrize(
    ("index", "row", "line", "message"),
    [
        # an unquoted comma: one field too many
        (2, "Password reset,I am locked out, really,Access,high", 4, "5 fields"),
        (0, "Printer broken,Hardware,normal", 2, "fewer"),
        # an unbalanced quote: the line where it opens is named
        (3, 'VPN access,"Please give me VPN access.,Access,low', 5, "quote"),
    ],
    ids=["extra-field", "missing-field", "unbalanced-quote"],
)
def test_malformed_row_is_an_error_with_its_line(tmp_path: Path, index: int, row: str, line: int, message: str) -> None:
    rows = good_rows()
    rows[index] = row
    path = good_csv(tmp_path / "t.csv", rows)
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert err.value.line == line
    assert message in err.value.message


def test_utf8_bom_is_read(tmp_path: Path) -> None:
    rows = good_rows()
    rows[0] = "Drucker kaputt,Der Drucker im 2. Stock klemmt – schön ärgerlich.,Hardware,normal"
    path = good_csv(tmp_path / "t.csv", rows, bom=True)
    data = load_labeled_file(path)
    assert data.fields == ("queue", "priority")  # the BOM did not end up in the first column name
    assert "schön ärgerlich" in data.texts[0]


def test_latin1_is_read(tmp_path: Path) -> None:
    rows = good_rows()
    rows[0] = "Imprimante bloquée,L'imprimante du 2e étage ne répond plus,Hardware,normal"
    path = good_csv(tmp_path / "t.csv", rows, encoding="latin-1")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    data = load_labeled_file(path)
    assert data.texts[0].startswith("Imprimante bloquée. L'imprimante du 2e étage")


def test_utf16_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("subject,body,queue\na,b,c\n".encode("utf-16"))
    with pytest.raises(DataError, match="encoding"):
        load_labeled_file(path)


def test_empty_rows_are_skipped(tmp_path: Path) -> None:
    rows = good_rows()
    rows.insert(2, "")
    rows.insert(4, ",,,")
    rows.append("")
    path = good_csv(tmp_path / "t.csv", rows)
    data = load_labeled_file(path)
    assert len(data) == len(GOOD_ROWS)
    assert data.stats["empty_rows_skipped"] == 3


def test_empty_text_is_an_error_with_line_and_column(tmp_path: Path) -> None:
    rows = good_rows()
    rows[1] = ",  ,Hardware,high"
    path = good_csv(tmp_path / "t.csv", rows)
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert (err.value.line, err.value.column) == (3, "subject+body")
    assert err.value.message == "empty text"
    data = load_labeled_file(path, skip_invalid=True, validate=False)
    assert len(data) == len(GOOD_ROWS) - 1
    assert data.stats["invalid_rows_skipped"] == 1


def test_single_class_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "text,queue", ["a,Hardware", "b,Hardware", "c,Hardware"])
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert err.value.column == "queue"
    assert "single class" in err.value.message


def test_class_with_one_example_is_an_error_naming_label_and_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "text,queue", ["a,Hardware", "b,Hardware", "c,Access", "d,Access", "e,HR"])
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert err.value.line == 6
    assert err.value.column == "queue"
    assert "'HR' has 1 example" in err.value.message
    # loading without validation works; the threshold is configurable
    assert len(load_labeled_file(path, validate=False)) == 5
    assert len(load_labeled_file(path, min_examples_per_class=1)) == 5


def test_exact_duplicates_are_dropped(tmp_path: Path) -> None:
    rows = good_rows()
    rows += rows[:2]
    rows.append("Printer broken,The printer on floor 2 jams.,Hardware,high")  # same text, other label: kept
    path = good_csv(tmp_path / "t.csv", rows)
    data = load_labeled_file(path)
    assert len(data) == len(GOOD_ROWS) + 1
    assert data.stats["duplicates_dropped"] == 2


def test_empty_label_means_unlabelled_for_that_field(tmp_path: Path) -> None:
    rows = good_rows() + ["Mouse broken,The mouse does not move,Hardware,"]
    path = good_csv(tmp_path / "t.csv", rows)
    data = load_labeled_file(path)
    assert data.labels["priority"][-1] is None
    assert len(data.for_field("queue")[0]) == len(GOOD_ROWS) + 1
    assert len(data.for_field("priority")[0]) == len(GOOD_ROWS)


def test_json_and_jsonl(tmp_path: Path) -> None:
    records = [{"subject": s, "body": b, "queue": q, "priority": p} for s, b, q, p in GOOD_ROWS]
    (tmp_path / "t.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    (tmp_path / "w.json").write_text(json.dumps({"tickets": records}), encoding="utf-8")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    csv_data = load_labeled_file(good_csv(tmp_path / "t.csv"))
    for name in ("t.json", "w.json", "t.jsonl"):
        data = load_labeled_file(tmp_path / name)
        assert data.texts == csv_data.texts, name
        assert data.labels == csv_data.labels, name
        assert data.fingerprint() == csv_data.fingerprint()


def test_json_array_streams_in_small_chunks(tmp_path: Path) -> None:
    import io

    from connector.model.data import iter_json_array

    records = [{"text": f"ticket number {i} " + "x" * (i % 7), "queue": f"Q{i % 3}", "n": 1.5} for i in range(200)]
    _header, rows = iter_json_array(io.StringIO(json.dumps(records, indent=1)), chunk_size=7)
    parsed = [obj for _line, obj in rows]
    assert parsed == records


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"text": "a", "queue": "X"}\n{"text": "b", queue: "Y"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_labeled_file(tmp_path / "t.jsonl")
    assert err.value.line == 2


def test_load_labeled_bytes_for_uploads() -> None:
    content = ("\ufeffsubject,body,queue,priority\n" + "\n".join(",".join(r) for r in GOOD_ROWS)).encode("utf-8")
    data = load_labeled_bytes(content, filename="upload.csv")
    assert len(data) == len(GOOD_ROWS)
    with pytest.raises(DataError) as err:
        load_labeled_bytes(b"subject,body\n", filename="x.csv")
    assert err.value.source == "x.csv"
    assert err.value.as_dict()["problems"][0]["line"] == 1


def test_split_is_stratified_and_deterministic() -> None:
    data = load_labeled_file(SAMPLE_TICKETS)
    train, valid = split(data, 0.2, seed=42)
    assert len(train) + len(valid) == len(data)
    assert not set(train.texts) & set(valid.texts) or len(set(data.texts)) < len(data)
    for label, n in data.label_counts("queue").items():
        assert valid.label_counts("queue")[label] == round(n * 0.2)
    again_train, again_valid = split(data, 0.2, seed=42)
    assert again_valid.texts == valid.texts
    _, other = split(data, 0.2, seed=7)
    assert other.texts != valid.texts


def test_split_keeps_every_class_on_both_sides() -> None:
    data = LabeledData(["a", "b", "c", "d", "e"], {"queue": ["X", "X", "X", "Y", "Y"]})
    train, valid = split(data, 0.2)
    assert set(train.labels_of("queue")) == {"X", "Y"}
    assert set(valid.labels_of("queue")) == {"X", "Y"}


def test_fingerprint_ignores_order_but_not_labels() -> None:
    a = LabeledData(["x", "y"], {"queue": ["A", "B"]})
    b = LabeledData(["y", "x"], {"queue": ["B", "A"]})
    c = LabeledData(["x", "y"], {"queue": ["A", "A"]})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_validate_data_for_selected_fields() -> None:
    data = LabeledData(["a", "b", "c", "d"], {"queue": ["X", "X", "Y", "Y"], "priority": ["low"] * 4})
    validate_data(data, fields=["queue"])
    with pytest.raises(DataError, match="single class"):
        validate_data(data)


BIG_FILE_BYTES = 100 * 1024 * 1024
#: distinct tickets in the big files (everything else repeats them)
BIG_DISTINCT = 300
BIG_QUEUES = ("Hardware", "Access", "Network", "Billing")


def big_body(k: int) -> str:
    return f"Ticket body {k}: the printer on floor {k % 5} jams again. " * 120  # ~7 KB


def load_measuring_peak(path: Path) -> tuple[LabeledData, int]:
    """Load ``path``; the data and the peak of Python memory allocated meanwhile."""
    tracemalloc.start()
    try:
        data = load_labeled_file(path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {path.stat().st_size / 2**20:.0f} MiB file"
    return data, peak


def test_a_100_mb_file_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 100 MB CSV is read row by row: peak Python memory stays far below the file size."""
    path = tmp_path / "big.csv"
    bodies = [big_body(k) for k in range(BIG_DISTINCT)]
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("subject,body,queue\n")
        written = 0
        i = 0
        while written < BIG_FILE_BYTES:
            line = f"Subject {i % BIG_DISTINCT},\"{bodies[i % BIG_DISTINCT]}\",{BIG_QUEUES[i % BIG_DISTINCT % 4]}\n"
            fh.write(line)
            written += len(line)
            i += 1
    assert path.stat().st_size >= BIG_FILE_BYTES
    data, _peak = load_measuring_peak(path)
    assert len(data) == BIG_DISTINCT  # everything else was an exact duplicate
    assert data.stats["rows"] == i


# --------------------------------------------------------------------------- the options object


def test_load_options_object_gives_the_same_data_as_keywords(tmp_path: Path) -> None:
    from dataclasses import FrozenInstanceError

    from connector.model.data import LoadOptions

    path = write_csv(
        tmp_path / "t.csv",
        "Document,Topic_group,Prio",
        ["printer jams,Hardware,1", "screen broken,Hardware,2", "password reset,Access,1", "vpn access,Access,2"],
    )
    options = LoadOptions(text_column="Document", label_columns=("queue=Topic_group", "Prio"))
    by_options = load_labeled_file(path, options)
    by_keywords = load_labeled_file(path, text_column="Document", label_columns=["queue=Topic_group", "Prio"])
    assert by_options.fields == by_keywords.fields == ("queue", "Prio")
    assert by_options.texts == by_keywords.texts and by_options.labels == by_keywords.labels
    assert load_labeled_bytes(path.read_bytes(), options, filename="t.csv").labels == by_options.labels
    with pytest.raises(FrozenInstanceError):
        options.validate = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        load_labeled_file(path, options, no_such_option=True)  # type: ignore[call-arg]


def test_keywords_override_the_options_object(tmp_path: Path) -> None:
    from connector.model.data import LoadOptions

    path = write_csv(tmp_path / "t.csv", "text,queue", ["a,Hardware", "b,Hardware", "c,Access", "d,Access", "e,HR"])
    strict = LoadOptions(min_examples_per_class=2)
    with pytest.raises(DataError, match="'HR' has 1 example"):
        load_labeled_file(path, strict)
    assert len(load_labeled_file(path, strict, validate=False)) == 5
    assert strict.validate  # the object given is left as it was
    assert LoadOptions.merged(strict, {"skip_invalid": True}) == LoadOptions(min_examples_per_class=2, skip_invalid=True)
    # the format from the options wins over the file name
    jsonl = tmp_path / "t.txt"
    jsonl.write_text("\n".join(json.dumps({"text": t, "queue": q}) for t, q in [("a", "X"), ("b", "X"), ("c", "Y"), ("d", "Y")]))
    assert len(load_labeled_file(jsonl, LoadOptions(format="jsonl"))) == 4


# --------------------------------------------------------------------------- the streaming JSON reader (ijson)


def test_malformed_json_array_names_the_line_of_the_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('[\n  {"text": "a", "queue": "X"},\n  {"text": "b", queue: "Y"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert err.value.line == 3
    assert err.value.source == str(path)
    assert err.value.message.startswith("invalid JSON: ")
    # a missing comma, on the line where the parser meets the next element
    path.write_text('[\n  {"text": "a", "queue": "X"}\n  {"text": "b", "queue": "Y"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_labeled_file(path)
    assert err.value.line == 3


def test_unclosed_json_array_and_trailing_data_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('[\n{"text": "a", "queue": "X"},\n{"text": "b", "queue": "Y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="never closed") as err:
        load_labeled_file(path)
    assert err.value.line == 4
    path.write_text('[{"text": "a", "queue": "X"}, {"text": "b", "queue": "Y"}]\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as err:
        load_labeled_file(path, validate=False)
    assert err.value.line == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"rows": [{"text": "a", "queue": "X"}]}', "must hold the tickets under 'tickets'"),
        ("42", "must be an array of ticket objects"),
        ('"tickets"', "must be an array of ticket objects"),
        ('{"tickets": {"text": "a"}}', "must be an array of ticket objects"),
        ("", "must be an array of ticket objects"),
        ('[{"text": "a", "queue": "X"}, ["b", "Y"]]', "each element of the array must be an object"),
    ],
)
def test_a_json_top_level_that_is_no_array_of_objects_is_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        load_labeled_file(path)
    assert err.value.line == 1


def test_json_rows_keep_their_lines_and_values(tmp_path: Path) -> None:
    records = [{"text": f"ticket {i}", "queue": f"Q{i % 2}", "n": 1.5, "tags": ["a", {"b": None}]} for i in range(4)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tickets": records}, indent=2), encoding="utf-8")
    data = load_labeled_file(path)
    # each object of the indented array takes 11 lines, the first starts on line 3
    assert data.lines == [3, 14, 25, 36]
    import io

    from connector.model.data import iter_json_array

    _header, rows = iter_json_array(io.StringIO(json.dumps(records)))
    parsed = [obj for _line, obj in rows]
    assert parsed == records and isinstance(parsed[0]["n"], float)


def test_a_huge_json_array_on_one_line_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 100 MB JSON array without a single line break is parsed element by element."""
    path = tmp_path / "big.json"
    bodies = [big_body(k) for k in range(BIG_DISTINCT)]
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")
        written = i = 0
        while written < BIG_FILE_BYTES:
            k = i % BIG_DISTINCT
            item = json.dumps({"subject": f"Subject {k}", "body": bodies[k], "queue": BIG_QUEUES[k % 4]})
            fh.write(("," if i else "") + item)
            written += len(item) + 1
            i += 1
        fh.write("]")
    assert path.stat().st_size >= BIG_FILE_BYTES
    data, _peak = load_measuring_peak(path)
    assert len(data) == BIG_DISTINCT
    assert data.stats["rows"] == i
    assert set(data.lines) == {1}
