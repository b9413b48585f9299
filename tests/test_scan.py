"""Scanning folders: crash-safe resumable output, the HTML report (and its headless render), the network view,
and the Ray Data path giving the same likelihoods as the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import chromium_flags
from PIL import Image

from gan_face.align import Face, Landmarks
from gan_face.checks.eyes import TEMPLATE_MEAN
from gan_face.outputs.account_network import AccountNetworkView
from gan_face.outputs.cli import main
from gan_face.outputs.report import verdict_row
from gan_face.result import CheckResult, Verdict

GAN_FACE = os.path.join(os.path.dirname(sys.executable), "gan-face")


@pytest.fixture(scope="module")
def avatars(tmp_path_factory, astronaut):
    """24 avatars: the astronaut cropped, flipped and resized in different ways, plus one broken file."""
    folder = tmp_path_factory.mktemp("avatars")
    rng = np.random.default_rng(0)
    for i in range(24):
        x0, y0 = rng.integers(0, 120, size=2)
        side = int(rng.integers(300, 512 - max(x0, y0)))
        crop = astronaut[y0 : y0 + side, x0 : x0 + side]
        if i % 2:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).resize((200 + 8 * i, 200 + 8 * i)).save(
            folder / f"a{i:02d}.jpg", quality=88
        )
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_killed_scan_resumes_to_exactly_one_row_per_file(avatars, tmp_path):
    out = tmp_path / "scan.jsonl"
    partial = tmp_path / "scan.jsonl.partial"
    command = [GAN_FACE, "scan", str(avatars), "-o", str(out), "--batch-size", "2", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if partial.exists() and partial.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # never a half-written report under the final name
    lines = partial.read_text().splitlines()
    assert 6 <= len(lines) < 25
    assert all(json.loads(line)["path"] for line in lines)  # whole rows only
    # resuming finishes it; running again without --resume refuses to overwrite
    done = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr  # the broken file
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    names = [r["path"] for r in rows]
    assert len(names) == len(set(names)) == 25
    assert names == sorted(names)  # input order survives the interruption
    assert not partial.exists()
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_html_report_is_self_contained_and_flagged_first(avatars, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["scan", str(avatars), "-o", str(out), "-q", "--threshold", "0.0"])
    assert result.exit_code == 1
    page = out.read_text()
    assert page.count('class="card') == 25
    assert page.count("data:image/jpeg;base64,") == 24  # every readable image has its thumbnail
    assert "<svg" in page and 'class="template"' in page and 'class="lm left_eye"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert page.index('data-flagged="1"') < page.index("zz_broken.jpg")  # flagged first, errors last
    assert "Network view" in page and "StyleGAN template" in page
    assert "flagged: likely generated" in page  # the answer in words on each card
    assert "observation, not weighed" in page  # the explaining checks are shown apart from the evidence


@pytest.mark.parametrize(
    "likelihood, contributions, answer, cited",
    [
        (0.97, {"cnn": 2.5, "eyes": 0.4}, "likely generated", ("cnn",)),  # flagged on the face's texture
        (0.97, {"cnn": 0.3, "eyes": 1.9}, "likely generated", ("eyes",)),  # flagged on the eye position
        (0.97, {"cnn": 2.0, "eyes": 1.5}, "likely generated", ("cnn", "eyes")),  # both pulled: both cited
        (0.02, {"cnn": -3.0, "eyes": 0.6}, "likely a camera photo", ("cnn",)),  # never the eyes, which pulled up
        (0.30, {"cnn": -2.0, "eyes": 1.2}, "can't tell", ("eyes",)),  # in the band: what raised it ...
        (None, {}, "can't tell", ()),
    ],
)
def test_the_reason_cites_only_evidence_that_points_to_its_answer(likelihood, contributions, answer, cited):
    checks = {
        "cnn": CheckResult("cnn", 0.9, "technical"),
        "eyes": CheckResult("eyes", 0.8, "technical"),
        "symmetry": CheckResult("symmetry", 0.9, "Left and right disagree: mismatched earrings."),
    }
    status = "ok" if likelihood is not None else "no_face"
    verdict = Verdict(likelihood, 0.5, status, None, checks, contributions, cant_tell_from=0.2)
    assert verdict.answer == answer and verdict.leading_evidence == cited
    reason = verdict.reason
    assert verdict_row("x.jpg", verdict, ["cnn", "eyes"])["reason"] == reason == verdict.to_dict()["reason"]
    assert verdict_row("x.jpg", verdict, ["cnn", "eyes"])["verdict"] == answer
    for word in ("CLIP", "CNN", "logit", "neural network", "technical"):
        assert word not in reason
    if likelihood is None:
        assert "no likelihood" in reason
        return
    sign = -1.0 if answer == "likely a camera photo" else 1.0
    assert all(sign * contributions[name] > 0 for name in verdict.leading_evidence)
    assert reason.lower().startswith(answer)
    if answer == "can't tell":
        assert "raised it" in reason and "held it down" in reason  # what raised it and what held it down
    # the symmetry check carries no weight: a lead to check by eye, never cited for a camera photo
    assert ("mismatched earrings" in reason) == (answer != "likely a camera photo")


def test_html_report_renders_in_headless_chromium(avatars, tmp_path, chromium):
    out = tmp_path / "report.html"
    assert CliRunner().invoke(main, ["scan", str(avatars), "-o", str(out), "-q", "--summary"]).exit_code == 1
    shot = tmp_path / "report.png"
    flags = chromium_flags(tmp_path / "profile")
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert "25 shown" in dom.stdout  # the page's script ran: sorted and counted the cards
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,1600", out.as_uri()],
        capture_output=True,
        timeout=120,
    )
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] >= 1000 and image.std() > 20  # a page with pictures, not a blank one
    keep = os.environ.get("GAN_FACE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def _avatar(synthetic: bool, left_eye, right_eye, mouth, eyes_score: float, size=(512, 512)) -> Verdict:
    landmarks = Landmarks(tuple(left_eye), tuple(right_eye), (256.0, 300.0), tuple(mouth[0]), tuple(mouth[1]))
    checks = {"eyes": CheckResult("eyes", eyes_score, "")}
    face = Face((0.0, 0.0, 1.0, 1.0), 0.99, landmarks)
    return Verdict(0.99 if synthetic else 0.01, 0.5, "ok", face, checks, image_size=size)


def test_network_view_stacks_template_faces():
    view = AccountNetworkView(size=32)
    width = height = 512
    eyes = TEMPLATE_MEAN.reshape(3, 2)[:2] * [width, height]
    rng = np.random.default_rng(1)
    for i in range(6):  # six GAN avatars on the template, a little jitter
        le, re = eyes + rng.normal(0, 1.5, size=(2, 2))
        verdict = _avatar(True, le, re, [(230, 370), (285, 370)], 0.5)
        view.add(f"gan{i}.jpg", verdict, np.full((64, 64, 3), 100, np.uint8))
    for i in range(4):  # four people framed their own way
        x = 150 + 40 * i
        verdict = _avatar(False, (x, 200 + 15 * i), (x + 90, 205 + 15 * i), [(x + 10, 320), (x + 80, 320)], 0.0)
        view.add(f"real{i}.jpg", verdict)
    summary = view.summary()
    assert summary["on_template"] == 6 and summary["on_template_share"] == 0.6
    (group,) = summary["groups"]
    assert group["count"] == 6 and group["on_template"] and group["members"] == [f"gan{i}.jpg" for i in range(6)]
    assert group["flagged"] == 6 and group["possible_network"] and group["same_framing_not_flagged"] == []
    assert view.mean_image(flagged_only=True).shape == (32, 32, 3)
    assert "coordinated" in view.text() and "possible network of 6 flagged avatars" in view.text()


def _framed_alike(view: AccountNetworkView, prefix: str, n: int, flagged: int, left_eye=(190, 240)) -> None:
    """``n`` avatars with their eyes on the same pixels (aligned the same way, off the StyleGAN template), the
    first ``flagged`` of them flagged."""
    x, y = left_eye
    for i in range(n):
        view.add(
            f"{prefix}{i}.jpg", _avatar(i < flagged, (x, y), (x + 130, y), [(x + 20, 380), (x + 110, 380)], 0.0)
        )


def test_a_group_is_a_possible_network_only_when_it_holds_flagged_avatars():
    """Real photos aligned by one tool share their eye positions: forty of them are shared framing, not a network;
    a group with flagged avatars in it is a possible network, with their count, and comes first."""
    view = AccountNetworkView(size=32)
    _framed_alike(view, "aligned_real", 40, flagged=0, left_eye=(190, 240))
    _framed_alike(view, "one_flag", 12, flagged=1, left_eye=(150, 300))
    _framed_alike(view, "suspect", 5, flagged=3, left_eye=(120, 200))
    groups = view.summary()["groups"]
    assert [(g["count"], g["flagged"], g["possible_network"]) for g in groups] == [
        (5, 3, True),
        (40, 0, False),
        (12, 1, False),  # one flagged avatar among real photos framed alike is one flag, not a network
    ]
    network = groups[0]
    assert network["members"] == ["suspect0.jpg", "suspect1.jpg", "suspect2.jpg"]  # the flagged ones, all of them
    assert network["same_framing_not_flagged"] == ["suspect3.jpg", "suspect4.jpg"]  # apart, never members
    text = view.text()
    assert "group 1: possible network of 3 flagged avatars" in text
    assert "members: suspect0.jpg, suspect1.jpg, suspect2.jpg" in text
    assert "same framing, not flagged (not part of the network): 2 avatars" in text
    assert "group 2: shared framing, not a network: 40 avatars" in text
    assert "group 3: shared framing, not a network: 12 avatars" in text and "flagged, alone" in text
    assert "coordinated" not in text  # nothing on the StyleGAN template
    assert "aligned_real" not in text  # unflagged photos are never named as a network's members


def test_the_report_states_the_network_rule_and_counts_flagged_avatars(tmp_path):
    from gan_face.outputs.report import verdict_row
    from gan_face.outputs.report_html import render_html

    view = AccountNetworkView(size=32)
    _framed_alike(view, "aligned_real", 40, flagged=0, left_eye=(190, 240))
    rows = tmp_path / "rows.jsonl"
    verdict = _avatar(False, (190, 240), (320, 240), [(210, 380), (300, 380)], 0.0)
    rows.write_text(json.dumps(verdict_row("aligned_real0.jpg", verdict, ["eyes"])) + "\n")
    out = tmp_path / "report.html"
    render_html(rows, out, threshold=0.98, model="m", evidence_names=["eyes"], network=view)
    page = out.read_text()
    assert "A <b>possible network</b> is the flagged avatars of a group, when there are at least 2" in page
    assert "No possible network: no group holds 2 or more flagged avatars." in page
    framings = page[page.index('<details class="framings">') :]  # folded away
    assert "1 group with a shared framing" in framings and "<td>not a network</td><td>40</td>" in framings
    _framed_alike(view, "suspect", 5, flagged=3, left_eye=(120, 200))
    render_html(rows, out, threshold=0.98, model="m", evidence_names=["eyes"], network=view)
    page = out.read_text()
    networks = page[page.index("<th>possible network</th>") : page.index('<details class="framings">')]
    assert "<td>group 1</td><td><b>3</b></td>" in networks and "aligned_real" not in networks
    members = networks[networks.index("<th>members (all flagged)</th>") :]
    assert "suspect0.jpg, suspect1.jpg, suspect2.jpg</details>" in members  # every member, folded
    assert "2 not flagged (not part of the network)" in members


def test_the_mean_faces_picture_is_labelled(tmp_path):
    view = AccountNetworkView(size=32)
    for i in range(4):
        view.add(f"a{i}.jpg", _avatar(i < 3, (190, 240), (320, 240), [(210, 380), (300, 380)], 0.0),
                 np.full((64, 64, 3), 90, np.uint8))  # fmt: skip
    assert [caption for caption, _ in view.mean_images()] == [
        "mean of the 3 flagged avatars",
        "mean of all 4 avatars",
    ]
    path = tmp_path / "network.png"
    assert view.save_mean_faces(str(path))
    picture = np.asarray(Image.open(path).convert("L"))
    from gan_face.outputs.account_network import PANEL_SIDE

    # two panels under a title band, over their captions and the legend: dark text on white above and below them
    assert picture.shape[0] > PANEL_SIDE + 100 and picture.shape[1] >= 2 * PANEL_SIDE
    title, captions = picture[:28], picture[-100:]
    assert (title < 100).sum() > 100 and (captions < 128).sum() > 300, "no text drawn"
    assert AccountNetworkView().save_mean_faces(str(tmp_path / "empty.png")) is False


def test_a_card_names_the_checks_not_computed_once(avatars, tmp_path):
    """A cleared avatar's card says on one line which checks were not computed (they carry no weight); the report
    says once, not on every card, how to compute them."""
    out = tmp_path / "report.html"
    assert CliRunner().invoke(main, ["scan", str(avatars), "-o", str(out), "-q"]).exit_code == 1
    page = out.read_text()
    cards = page.split('<div class="card')[1:]
    skipped = [card for card in cards if "Not computed" in card]
    assert skipped, "every avatar was flagged or near the threshold: nothing tests the line"
    for card in skipped:
        assert card.count("Not computed") == 1 and "--checks" not in card
        assert "Not computed (no weight in the likelihood): symmetry, background, spectrum" in card
        assert "<th>symmetry</th>" not in card  # the line replaces the check's row
    assert page.count("--explain all") == 1


def test_ray_data_gives_the_same_likelihoods_as_the_cli(avatars, tmp_path):
    ray = pytest.importorskip("ray", reason='needs Ray (not in [test], ~0.5 GB): pip install ".[ray]"')
    from gan_face.outputs.ray_data import score_folder

    out = tmp_path / "cli.jsonl"
    assert CliRunner().invoke(main, ["scan", str(avatars), "-o", str(out), "-q"]).exit_code == 1
    cli = {row["path"]: row for row in map(json.loads, out.read_text().splitlines())}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rows = score_folder(avatars, batch_size=8, actors=2).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["path"] for r in rows) == sorted(cli)
    for row in rows:
        expected = cli[row["path"]]
        if expected["error"]:
            assert row["error"] and row["likelihood"] is None
        elif expected["likelihood"] is None:  # nothing the model weighs was measured (no face)
            assert row["likelihood"] is None and row["status"] == expected["status"] == "no_face"
        else:
            # rows carry 6 decimals; other batch sizes and thread counts change float rounding, nothing more
            assert abs(row["likelihood"] - expected["likelihood"]) < 1e-4, row["path"]
            assert row["status"] == expected["status"]
