"""docs/api.md lists every operation of the OpenAPI document with the permission it
declares, so that the doc cannot drift from the routes: a new route, a changed path
or permission fails this test until the table is made again with

    PYTHONPATH=src:. python -m tests.api.test_api_doc

which rewrites the table between its two markers (and nothing else of the page)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from stasis.api.app import openapi
from stasis.api.context import ApiContext
from stasis.app.auth import PERMISSIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BEGIN = "<!-- operations: made by python -m tests.api.test_api_doc; do not edit by hand -->"
END = "<!-- end of operations -->"


def _first_sentence(op: dict[str, Any]) -> str:
    text = " ".join((op.get("description") or op.get("summary") or "").split())
    text = text.split("\n\n")[0]
    cut = re.search(r"(?<=[a-z0-9)`'])\.(\s|$)", text)
    sentence = text[:cut.start() + 1] if cut else text
    return sentence.replace("|", "\\|").replace("``", "`")


def operations_table(doc: dict[str, Any]) -> str:
    """The table of every operation: method, path, permission, what it does."""
    rows = ["| method | path | permission | what it does |", "| --- | --- | --- | --- |"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            rows.append(f"| {method.upper()} | `{path}` | `{op['x-permission']}` | "
                        f"{_first_sentence(op)} |")
    return "\n".join(rows)


def _document() -> dict[str, Any]:
    # The document depends only on the routes, not on what the context holds.
    ctx = ApiContext(catalog=None, repositories={}, default_repository="main",  # type: ignore[arg-type]
                     connect="test:///default", authenticator=None)  # type: ignore[arg-type]
    return openapi(ctx)


def _table_in(text: str) -> str:
    assert BEGIN in text and END in text, f"{DOC} lacks the operations table's markers"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_doc_lists_every_operation_with_its_permission() -> None:
    doc = _document()
    written = _table_in(DOC.read_text())
    assert written == operations_table(doc), (
        "docs/api.md's table of operations is not the routes': run "
        "'PYTHONPATH=src:. python -m tests.api.test_api_doc'")
    # and every operation is there (not only that the table is the generator's)
    count = sum(len(item) for item in doc["paths"].values())
    assert written.count("\n| ") == count + 1 and count > 50  # the separator, then one a row


def test_the_doc_names_every_permission_and_series() -> None:
    text = DOC.read_text()
    for permission in PERMISSIONS:
        assert f"`{permission}`" in text, permission
    for series in ("stasis_jobs_total", "stasis_job_duration_seconds",
                   "stasis_job_read_bytes_total", "stasis_job_written_bytes_total",
                   "stasis_vm_newest_point_age_seconds", "stasis_vm_rpo_state",
                   "stasis_repository_points", "stasis_repository_stored_bytes",
                   "stasis_repository_logical_bytes"):
        assert series in text, series


def main() -> None:
    text = DOC.read_text()
    before, rest = text.split(BEGIN, 1)
    _old, after = rest.split(END, 1)
    DOC.write_text(f"{before}{BEGIN}\n{operations_table(_document())}\n{END}{after}")
    sys.stdout.write(f"rewrote the operations table of {DOC}\n")


if __name__ == "__main__":
    main()
