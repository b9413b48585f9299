"""Threads from the CPUs really available, lazy explanation-only checks, and the crop pools' thread setting."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import needs_training
from PIL import Image

from gan_face import _runtime


def _fake_cgroups(tmp_path, proc_lines, files):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text("\n".join(proc_lines) + "\n")
    for name, text in files.items():
        path = tmp_path / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(proc), str(tmp_path / "sys")


def test_cgroup_v2_quota_is_read_and_the_smallest_on_the_path_wins(tmp_path):
    proc, root = _fake_cgroups(
        tmp_path,
        ["0::/jobs/scan"],
        {"jobs/cpu.max": "300000 100000\n", "jobs/scan/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"},
    )
    assert _runtime.cgroup_cpu_limit(proc, root) == 1.5


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    proc, root = _fake_cgroups(
        tmp_path,
        ["4:memory:/x", "1:cpu,cpuacct:/box"],
        {"cpu,cpuacct/box/cpu.cfs_quota_us": "200000\n", "cpu,cpuacct/box/cpu.cfs_period_us": "100000\n"},
    )
    assert _runtime.cgroup_cpu_limit(proc, root) == 2.0
    proc, root = _fake_cgroups(tmp_path / "none", ["0::/"], {"cpu.max": "max 100000\n"})
    assert _runtime.cgroup_cpu_limit(proc, root) is None
    assert _runtime.cgroup_cpu_limit(str(tmp_path / "missing"), root) is None


def test_threads_come_from_the_option_the_environment_or_the_cpus(monkeypatch):
    monkeypatch.setattr(_runtime, "cgroup_cpu_limit", lambda: 1.2)
    monkeypatch.delenv(_runtime.THREADS_ENV, raising=False)
    assert _runtime.available_cpus() == min(2, len(__import__("os").sched_getaffinity(0)))
    assert _runtime.resolve_threads() == _runtime.available_cpus()
    monkeypatch.setenv(_runtime.THREADS_ENV, "3")
    assert _runtime.resolve_threads() == 3
    assert _runtime.resolve_threads(5) == 5  # the option wins
    monkeypatch.setenv(_runtime.THREADS_ENV, "many")
    with pytest.raises(ValueError, match=_runtime.THREADS_ENV):
        _runtime.resolve_threads()
    with pytest.raises(ValueError):
        _runtime.resolve_threads(0)


@needs_training
def test_configure_threads_runs_torch_on_one_thread_per_worker():
    import torch

    before = torch.get_num_threads()
    try:
        assert _runtime.configure_threads(3) == 3
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_auto_checks_give_the_same_likelihood_and_say_what_was_skipped(detector, astronaut):
    from gan_face import Detector
    from gan_face.result import NotComputed

    auto = Detector(explain="auto")
    full, lazy = detector.score(astronaut), auto.score(astronaut)
    assert lazy.likelihood == full.likelihood and lazy.synthetic == full.synthetic is False
    skipped = lazy.not_computed
    assert skipped == list(auto.explaining_checks) == ["symmetry", "background", "spectrum"]
    assert all(isinstance(lazy.evidence[name], NotComputed) for name in skipped)
    assert all(
        lazy.evidence[name].score is None and "Not computed" in lazy.evidence[name].explanation for name in skipped
    )
    assert full.not_computed == []
    # a flagged image (threshold 0) or one near the threshold gets every check
    flagged = Detector(explain="auto", threshold=0.0).score(astronaut)
    assert flagged.not_computed == []
    assert flagged.evidence["symmetry"].score == full.evidence["symmetry"].score
    # explained from log-odds 2 below the threshold's (0.92 at gan-face-v3's 0.9884)
    assert auto._wants_explanation(0.93) and not auto._wants_explanation(0.5) and auto._wants_explanation(None)


def test_scan_reports_the_checks_not_computed(tmp_path, astronaut):
    from gan_face.outputs.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "a.jpg", quality=90)
    rows = {}  # torch's thread count, where torch is loaded, is restored by conftest's _torch_threads_restored
    for option in ("auto", "all"):
        out = tmp_path / f"{option}.csv"
        args = ["scan", str(folder), "-o", str(out), "-q", "--checks", option, "--threads", "1"]
        assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
        rows[option] = next(csv.DictReader(open(out)))
    assert list(rows["auto"])[-1] == "not_computed"
    assert rows["auto"]["not_computed"] == "symmetry background spectrum" and rows["auto"]["check_symmetry"] == ""
    assert rows["all"]["not_computed"] == "" and rows["all"]["check_symmetry"] != ""
    assert rows["auto"]["likelihood"] == rows["all"]["likelihood"]


@needs_training
def test_crop_pool_in_the_main_process_leaves_torch_threads_alone(tmp_path, astronaut):
    """workers=1 builds the pool in the main process: it used to set torch to one thread for the training after
    it (fine-tuning ran on one core of two)."""
    import torch

    from gan_face.align import CROP_TEMPLATE
    from gan_face.training.pools import _PoolWorker

    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    points = np.array([[200.0, 180.0], [280.0, 180.0], [240.0, 220.0], [210.0, 260.0], [270.0, 260.0]])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        index, stack = _PoolWorker(lambda image, pts, i, k: (image, pts), 2, 64, CROP_TEMPLATE, "face")(
            (0, str(path), points)
        )
        assert stack.shape == (2, 64, 64, 3) and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
