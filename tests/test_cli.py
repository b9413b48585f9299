import csv
import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import broken_files, needs_training

from gan_face.outputs.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture()
def folder(tmp_path, astronaut):
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    files = broken_files(avatars, astronaut)
    (avatars / "MANIFEST.txt").write_text("not an image and not named like one: skipped\n")
    (avatars / "sub").mkdir()
    (avatars / "sub" / "deep.jpg").write_bytes(files["good.jpg"].read_bytes())
    return avatars


def test_scan_folder_to_csv_one_row_per_file(folder, tmp_path):
    out = tmp_path / "report.csv"
    start = time.perf_counter()
    result = run("scan", str(folder), "-o", str(out), "-q")
    assert result.exit_code == 1  # some files were broken
    rows = list(csv.DictReader(open(out)))
    names = [r["path"] for r in rows]
    assert names == sorted(names)  # input order: the folder's files sorted
    assert set(names) == {
        "animated.gif",
        "bomb.png",
        "cmyk.jpg",
        "empty.jpg",
        "good.jpg",
        "grey16.png",
        "rgba.png",
        "rotated.jpg",
        "text.jpg",
        "truncated.jpg",
    }
    by_name = {r["path"]: r for r in rows}
    for broken in ("empty.jpg", "truncated.jpg", "text.jpg", "bomb.png"):
        row = by_name[broken]
        assert broken in row["error"] and row["likelihood"] == ""
    for good in ("animated.gif", "cmyk.jpg", "good.jpg", "grey16.png", "rgba.png", "rotated.jpg"):
        row = by_name[good]
        assert row["error"] == "" and 0.0 <= float(row["likelihood"]) <= 1.0, good
        assert row["status"] == "ok" and row["check_eyes"] != "" and row["reason"]
    assert not (tmp_path / "report.csv.partial").exists()
    assert time.perf_counter() - start < 60


def test_scan_recursive_jsonl_and_stdout(folder, tmp_path):
    out = tmp_path / "r.jsonl"
    assert run("scan", str(folder), "-r", "-o", str(out), "-q").exit_code == 1
    rows = [json.loads(line) for line in open(out)]
    assert "sub/deep.jpg" in [r["path"] for r in rows]
    good = next(r for r in rows if r["path"] == "good.jpg")
    assert {"path", "likelihood", "synthetic", "status", "error", "check_eyes"} <= set(good)
    assert good["face"]["landmarks"]["left_eye"] and good["explanations"]["eyes"]
    assert all((r["likelihood"] is None) == (r["error"] is not None) for r in rows)
    result = run("scan", str(folder / "good.jpg"), "--format", "jsonl", "-q")
    assert result.exit_code == 0
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert row["path"] == str(folder / "good.jpg")


def test_existing_report_is_not_overwritten(folder, tmp_path):
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    result = CliRunner().invoke(main, ["scan", str(folder / "good.jpg"), "-o", str(out)])
    assert result.exit_code == 2 and "--resume" in result.output
    assert out.read_text() == "precious\n"
    assert run("scan", str(folder / "good.jpg"), "-o", str(out), "--overwrite", "-q").exit_code == 0
    assert "good.jpg" in out.read_text()


def test_bad_usage_exits_2(tmp_path):
    assert CliRunner().invoke(main, ["scan", str(tmp_path / "missing")]).exit_code == 2
    assert CliRunner().invoke(main, ["scan"]).exit_code == 2
    assert CliRunner().invoke(main, ["scan", str(tmp_path), "--threshold", "3"]).exit_code == 2


def test_console_script_runs(folder, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "gan-face")
    done = subprocess.run([exe, "scan", str(folder / "good.jpg"), "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("path,likelihood,synthetic")


def _evil_weights(tmp_path):
    """A pickle that would create a marker file if it were ever unpickled, with a card naming it."""
    import pickle

    from gan_face.card import CnnConfig, ModelCard

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps({"_fc.weight": Payload()}))
    card = dict(ModelCard.load().to_dict(), cnn={"weights": "evil.pth", "config": CnnConfig().to_dict()})
    weights.with_suffix(".json").write_text(json.dumps(card))
    return weights, marker


@needs_training  # torch's weights_only loader is what refuses (without torch a .pth is not read at all)
def test_malicious_weights_are_refused_by_scan_and_finetune(folder, tmp_path):
    weights, marker = _evil_weights(tmp_path)
    scan = CliRunner().invoke(main, ["scan", str(folder / "good.jpg"), "--weights", str(weights)])
    assert scan.exit_code == 2 and "refused" in scan.output and "weights_only" in scan.output
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    tune = CliRunner().invoke(
        main,
        [
            "finetune",
            "--real",
            str(tmp_path / "real"),
            "--fake",
            str(tmp_path / "fake"),
            "-o",
            str(tmp_path / "out.safetensors"),
            "--base",
            str(weights),
        ],
    )
    assert tune.exit_code == 2 and "refused" in tune.output
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_undecodable_file_names_and_colliding_names(folder, tmp_path):
    odd = os.fsencode(str(folder)) + b"/caf\xe9.jpg"  # Latin-1 bytes: not valid UTF-8
    with open(odd, "wb") as handle:
        handle.write((folder / "good.jpg").read_bytes())
    out = tmp_path / "odd.jsonl"
    assert run("scan", str(folder), "-o", str(out), "-q").exit_code == 1
    names = [json.loads(line)["path"] for line in open(out, encoding="utf-8")]
    assert "caf\\xe9.jpg" in names
    # a file and a folder holding a file of the same name: rows keep the folder in front
    other = tmp_path / "other"
    other.mkdir()
    (other / "good.jpg").write_bytes((folder / "good.jpg").read_bytes())
    result = run("scan", str(folder / "good.jpg"), str(other), "--format", "jsonl", "-q")
    paths = [json.loads(line)["path"] for line in result.output.splitlines()]
    assert len(paths) == len(set(paths)) == 2


def test_interrupted_partial_is_never_silently_deleted(folder, tmp_path):
    out = tmp_path / "r.csv"
    partial = tmp_path / "r.csv.partial"
    partial.write_text("path,likelihood\n")
    result = CliRunner().invoke(main, ["scan", str(folder / "good.jpg"), "-o", str(out)])
    assert result.exit_code == 2 and "--resume" in result.output
    assert partial.read_text() == "path,likelihood\n"
