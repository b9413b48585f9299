"""The README's examples run as written, on the files in the repository, and say what they measure."""

import contextlib
import csv
import io
import re

import pytest
from click.testing import CliRunner
from conftest import REPO

from gan_face.outputs.cli import main

README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_python_api_example_runs_as_written(monkeypatch):
    blocks = _python_blocks(_section("Python API"))
    assert blocks, "no ```python block under '## Python API'"
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root, as for a reader in a clone
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, "README.md (Python API)", "exec"), {"__name__": "readme"})
    output = printed.getvalue()
    printed_likelihood = re.search(r"^examples/astronaut\.jpg (\S+) False ", output, flags=re.M)
    assert printed_likelihood and float(printed_likelihood.group(1)) < 0.01  # the real photo, not flagged
    assert "examples/README.md unreadable:" in output


def _table_rows(text: str) -> dict[str, dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_quick_start_table_is_what_the_scan_gives(tmp_path):
    shown = _table_rows(_section("Quick start").split("(the evidence columns", 1)[1].split("\n\n", 2)[1])
    out = tmp_path / "scan.csv"
    assert CliRunner().invoke(main, ["scan", str(REPO / "examples"), "-o", str(out), "-q"]).exit_code == 0
    with open(out, newline="") as handle:
        scanned = {row["path"]: row for row in csv.DictReader(handle)}
    assert set(shown) == set(scanned)
    previous = None
    for name, row in shown.items():
        measured = scanned[name]
        assert float(row["likelihood"]) == pytest.approx(float(measured["likelihood"]), abs=1e-4), name
        assert (row["synthetic"], row["status"]) == (measured["synthetic"], measured["status"]), name
        assert row["verdict"] == measured["verdict"], name
        reason = previous if row["reason"] == "(the same sentence)" else row["reason"]  # as the row above
        assert reason == measured["reason"], name
        previous = reason
