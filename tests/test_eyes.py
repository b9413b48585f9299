import numpy as np

from gan_face.align import Face, Landmarks
from gan_face.checks.eyes import TEMPLATE_MEAN, chi2_6_survival, eye_position_check, template_distance


def face_at(eyes_and_mouth: np.ndarray, width: int, height: int) -> Face:
    (lx, ly), (rx, ry), (mx, my) = eyes_and_mouth.reshape(3, 2) * [width, height]
    points = [(lx, ly), (rx, ry), ((lx + rx) / 2, (ly + my) / 2), (mx - 0.05 * width, my), (mx + 0.05 * width, my)]
    return Face((0, 0, width, height), 0.99, Landmarks.from_array(np.array(points)))


def test_template_face_scores_high_and_shifted_face_low():
    image = np.zeros((512, 512, 3), dtype=np.uint8)
    on = eye_position_check(image, face_at(TEMPLATE_MEAN, 512, 512))
    assert on.score > 0.9 and "StyleGAN" in on.explanation
    shifted = TEMPLATE_MEAN + [0.05, 0.0, 0.05, 0.0, 0.05, 0.0]  # the whole face 5% to the right
    off = eye_position_check(image, face_at(shifted, 512, 512))
    assert off.score < 1e-6 and "5.0%" in off.explanation
    assert off.regions and all(len(box) == 4 for _, box in off.regions)


def test_scale_invariant_and_rejects_changed_aspect():
    for side in (256, 1024):
        result = eye_position_check(np.zeros((side, side, 3), np.uint8), face_at(TEMPLATE_MEAN, side, side))
        assert result.score > 0.9
    # the same pixel positions in an image padded to a wider frame: no longer on the template
    face = face_at(TEMPLATE_MEAN, 512, 512)
    assert eye_position_check(np.zeros((512, 700, 3), np.uint8), face).score < 1e-3


def test_no_face_cannot_be_judged():
    result = eye_position_check(np.zeros((64, 64, 3), np.uint8), None)
    assert result.score is None and "No face" in result.explanation


def test_chi2_survival_matches_known_values():
    assert chi2_6_survival(0.0) == 1.0
    assert abs(chi2_6_survival(12.5916) - 0.05) < 1e-4  # the 95th percentile of chi-square(6)
    assert template_distance(TEMPLATE_MEAN) == 0.0
