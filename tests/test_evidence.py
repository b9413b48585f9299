"""Evidence a person can check: reasons that agree with the number, three answers, a network view that never shows
real people as a network, and the scan's own honesty (resumed summaries, interruptions, devices)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_golden import constructed_images

from gan_face import Detector, is_synthetic
from gan_face.outputs.cli import main
from gan_face.result import ANSWERS, CANT_TELL, LIKELY_CAMERA, LIKELY_GENERATED

REPO_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _points_to_the_answer(verdict) -> bool:
    sign = -1.0 if verdict.answer == LIKELY_CAMERA else 1.0
    return all(sign * verdict.contributions[name] > 0 for name in verdict.leading_evidence)


@pytest.mark.parametrize("model", ["gan-face-v2", "gan-face-v3", "gan-face-v4"])
def test_every_golden_reason_leads_with_evidence_that_points_to_its_answer(model):
    detector = Detector(model, explain="all")
    for name, image in constructed_images().items():
        verdict = detector.score(image)
        assert verdict.answer in ANSWERS, name
        assert _points_to_the_answer(verdict), (name, verdict.contributions, verdict.reason)
        if verdict.likelihood is not None:
            assert verdict.reason.lower().startswith(verdict.answer), (name, verdict.reason)
        for word in ("CLIP", "CNN", "logit", "neural network"):
            assert word not in verdict.reason, (name, verdict.reason)


def test_the_real_example_cites_no_fake_looking_finding_as_evidence():
    detector = Detector(explain="all")  # every explaining check computed, as in the issue
    verdict = is_synthetic(REPO_EXAMPLES / "astronaut.jpg", detector=detector)
    assert verdict.answer == LIKELY_CAMERA and not verdict.synthetic
    assert verdict.reason.startswith("Likely a camera photo")
    for name, found in verdict.evidence.items():
        if found.score is not None and found.score >= 0.5:  # a finding that leans towards a generator
            assert found.explanation not in verdict.reason, name
    assert _points_to_the_answer(verdict)


def test_the_answer_follows_the_band_fitted_in_the_card():
    card_band = Detector().card.cant_tell_from
    assert card_band is not None and 0.0 < card_band < Detector().card.threshold
    from gan_face.result import Verdict

    def answer(likelihood: float) -> str:
        return Verdict(likelihood, 0.9, "ok", None, {}, cant_tell_from=0.6).answer

    assert [answer(p) for p in (0.95, 0.9, 0.7, 0.6, 0.59, 0.01)] == [
        LIKELY_GENERATED,
        LIKELY_GENERATED,
        CANT_TELL,
        CANT_TELL,
        LIKELY_CAMERA,
        LIKELY_CAMERA,
    ]
    # a user's lower threshold moves the band's top; the band never reaches above it
    assert Verdict(0.5, 0.4, "ok", None, {}, cant_tell_from=0.6).answer == LIKELY_GENERATED
    assert Verdict(0.39, 0.4, "ok", None, {}, cant_tell_from=0.6).answer == LIKELY_CAMERA


def test_a_resumed_scan_counts_every_row_of_the_report(tmp_path, astronaut):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):  # the astronaut framed six ways
        crop = astronaut[10 * i : 400 + 10 * i, 15 * i : 400 + 15 * i]
        Image.fromarray(crop).save(folder / f"a{i}.jpg", quality=80 + i)
    out = tmp_path / "report.jsonl"
    assert CliRunner().invoke(main, ["scan", str(folder), "-o", str(out), "-q"]).exit_code == 0
    rows = out.read_text().splitlines()
    out.unlink()
    (tmp_path / "report.jsonl.partial").write_text("\n".join(rows[:4]) + "\n")  # an interrupted run kept 4
    done = CliRunner().invoke(main, ["scan", str(folder), "-o", str(out), "--resume", "--summary"])
    assert done.exit_code == 0, done.output
    assert "6 scored" in done.output and "(4 of the scored rows kept from the interrupted run)" in done.output
    assert "network view: 6 avatars" in done.output  # the kept rows too, not only the 2 scored now


def test_gpu_without_a_gpu_is_refused_with_the_reason_and_exit_2(tmp_path, astronaut):
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "a.jpg")
    done = subprocess.run(
        [sys.executable, "-m", "gan_face.outputs.cli", "scan", str(tmp_path), "--device", "gpu", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot load the model: device 'GPU'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.data
def test_the_network_view_never_shows_a_real_photo_as_a_member(shared_data, tmp_path):
    """FFHQ-aligned real photos share StyleGAN's eye positions: they may sit in the same group as StyleGAN faces,
    but never among a network's members, in the summary or on the HTML page."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    reals = sorted((shared_data / "real" / "aligned_ffhq_alae").glob("*.jpg"))[:24]
    fakes = sorted((shared_data / "fake" / "tpdne_junguler").glob("*.jpg"))[:12]
    for path in reals:
        shutil.copy(path, folder / f"real_{path.name}")
    for path in fakes:
        shutil.copy(path, folder / f"fake_{path.name}")
    out = tmp_path / "report.html"
    done = CliRunner().invoke(main, ["scan", str(folder), "-o", str(out), "-q", "--summary"])
    assert done.exit_code == 0, done.output
    members = [line for line in done.output.splitlines() if line.strip().startswith("members:")]
    assert members, done.output  # the StyleGAN faces do form a possible network
    assert all("real_" not in line for line in members), members
    page = out.read_text()
    cells = page.split('<td class="members">')[1:]
    assert cells  # the page lists the possible network's members
    for cell in cells:
        assert "real_" not in cell.split("</td>")[0], cell.split("</td>")[0]
