"""What the clients return: the server's JSON, typed, and readable in Jupyter.

Each result is still the dict the server sent (`job["status"]` keeps working, `json.dumps(job)`
too) with its fields as attributes (`job.status`) and an HTML table when a notebook displays it.
Lists come back as a `Table`, which a notebook shows as one table with a row per item:

    job = client.job("digits", job_id)
    job.status, job.exit_code          # typed attributes
    Table(client.jobs("digits"))       # in Jupyter: one table of every job
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")
# Long values (a script, a log) are cut in tables: the full value is one attribute away.
CELL_LIMIT = 120


class Record(dict[str, Any]):
    """A JSON object from the server, readable as a dict or by attribute."""

    columns: ClassVar[tuple[str, ...]] = ()  # the fields a Table shows; empty: every field

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field '{name}'") from None

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{_cell(k)}</th><td>{_cell(v)}</td></tr>"
            for k, v in self.items()
        )
        return f"<table><caption>{type(self).__name__}</caption>{rows}</table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's plain-text display
        printer.text(f"{type(self).__name__}({dict.__repr__(self) if not cycle else '...'})")


class Service(Record):
    columns = ("name", "image", "owner", "visibility", "sluice_executor")
    name: str
    image: str
    script: str
    token: str
    owner: str
    visibility: str


class Job(Record):
    columns = ("id", "status", "bucket", "key", "attempts", "exit_code", "error")
    id: str
    service: str
    status: str
    bucket: str | None
    key: str | None
    attempts: int
    exit_code: int | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self["status"] in ("succeeded", "failed", "cancelled")


class StoredObject(Record):
    columns = ("object_name", "size_bytes", "last_modified")
    object_name: str
    size_bytes: int
    last_modified: str


class Bucket(Record):
    columns = ("bucket_name", "visibility", "owner")
    bucket_name: str


class Table(list[R]):
    """Results in a list that a notebook shows as one table."""

    def __init__(self, items: Iterable[R] = ()) -> None:
        super().__init__(items)

    def _repr_html_(self) -> str:
        if not self:
            return "<p>(none)</p>"
        columns = type(self[0]).columns or tuple(dict.fromkeys(k for item in self for k in item))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(item.get(c))}</td>" for c in columns) + "</tr>" for item in self
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>{len(self)} rows</p>"


def wrap_all(kind: type[R], items: Iterable[dict[str, Any]]) -> Table[R]:
    return Table(kind(item) for item in items)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > CELL_LIMIT:
        text = text[: CELL_LIMIT - 1] + "…"
    return html.escape(text)
