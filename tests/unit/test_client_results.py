"""Client results: still the server's dicts, typed attributes, and tables a notebook can show."""

from __future__ import annotations

import json
import pickle

import pytest

from sluice.client import Job, Record, Service, Table

JOB = {
    "id": "abc123",
    "service": "digits",
    "status": "failed",
    "bucket": "digits",
    "key": "input/<script>.csv",
    "attempts": 1,
    "exit_code": 3,
    "error": "script exited with code 3",
}


def test_a_result_is_the_servers_dict_with_attributes() -> None:
    job = Job(JOB)
    assert job == JOB and job["status"] == "failed"
    assert job.status == "failed" and job.exit_code == 3
    assert job.finished
    assert json.loads(json.dumps(job)) == JOB
    assert pickle.loads(pickle.dumps(job)) == job
    with pytest.raises(AttributeError, match="Job has no field 'nope'"):
        _ = job.nope


def test_a_record_shows_as_an_escaped_html_table() -> None:
    shown = Job(JOB)._repr_html_()
    assert shown.startswith("<table>") and "<caption>Job</caption>" in shown
    assert "input/&lt;script&gt;.csv" in shown and "<script>" not in shown
    long = Record({"script": "x" * 1000})._repr_html_()
    assert "x" * 119 + "…" in long and "x" * 121 not in long


def test_a_table_shows_one_row_per_item_with_the_kinds_columns() -> None:
    services = Table([Service({"name": "a", "image": "i", "owner": "oscar", "token": "secret-ish"})])
    shown = services._repr_html_()
    assert "<th>name</th><th>image</th><th>owner</th>" in shown
    assert "secret-ish" not in shown  # only the kind's columns, not every field
    assert "1 rows" in shown
    assert Table()._repr_html_() == "<p>(none)</p>"


def test_plain_text_display_names_the_kind() -> None:
    class Printer:
        def __init__(self) -> None:
            self.text_seen = ""

        def text(self, value: str) -> None:
            self.text_seen += value

    printer = Printer()
    Job(JOB)._repr_pretty_(printer, cycle=False)
    assert printer.text_seen.startswith("Job({'id': 'abc123'")
