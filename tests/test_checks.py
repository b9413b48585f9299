"""Each forensic check on constructed images with known answers."""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gan_face.align import Face, Landmarks
from gan_face.checks import CHECKS, run_checks
from gan_face.checks.background import STRAIGHT_SCENE, background_check, background_features
from gan_face.checks.spectrum import face_square, spectrum_check, spectrum_features
from gan_face.checks.symmetry import symmetry_check, symmetry_features

SIZE = 400
EYES = ((160.0, 180.0), (240.0, 180.0))  # interocular 80 px
NOSE = (200.0, 225.0)
MOUTH = ((172.0, 268.0), (228.0, 268.0))


def face_at(nose=NOSE) -> Face:
    return Face((110.0, 100.0, 290.0, 330.0), 0.999, Landmarks(EYES[0], EYES[1], nose, MOUTH[0], MOUTH[1]))


def drawn_face(
    background="flat",
    left_iris=(70, 110, 160),
    right_iris=(70, 110, 160),
    right_highlight=(0, -3),
    earrings=(True, True),
) -> np.ndarray:
    """A symmetric cartoon face with irises, corneal highlights and earrings, on a chosen background."""
    rng = np.random.default_rng(0)
    if background == "flat":
        canvas = Image.new("RGB", (SIZE, SIZE), (150, 160, 170))
    elif background == "smeared":  # a GAN-like backdrop: soft colour blobs, nothing straight
        blobs = rng.integers(60, 200, size=(8, 8, 3), dtype=np.uint8)
        canvas = Image.fromarray(blobs).resize((SIZE, SIZE), Image.BICUBIC).filter(ImageFilter.GaussianBlur(6))
    else:  # a real-scene-like backdrop: long straight edges (shelves, a window frame)
        canvas = Image.new("RGB", (SIZE, SIZE), (120, 110, 100))
        pen = ImageDraw.Draw(canvas)
        for y in range(0, SIZE, 23):
            pen.line([(0, y), (SIZE, y + 6)], fill=(200, 190, 170), width=3)
        for x in range(0, SIZE, 57):
            pen.line([(x, 0), (x, SIZE)], fill=(40, 35, 30), width=4)
    pen = ImageDraw.Draw(canvas)
    pen.ellipse((115, 95, 285, 335), fill=(222, 180, 150))  # skin
    pen.ellipse((92, 200, 118, 250), fill=(210, 170, 140))  # ears
    pen.ellipse((282, 200, 308, 250), fill=(210, 170, 140))
    for (x, y), iris, spot, earring, ear_x in zip(
        EYES, (left_iris, right_iris), ((0, -3), right_highlight), earrings, (105, 295)
    ):
        pen.ellipse((x - 16, y - 8, x + 16, y + 8), fill=(245, 245, 245))  # white of the eye
        pen.ellipse((x - 7, y - 7, x + 7, y + 7), fill=iris)
        pen.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(15, 15, 15))  # pupil
        sx, sy = x + spot[0], y + spot[1]
        pen.ellipse((sx - 1.5, sy - 1.5, sx + 1.5, sy + 1.5), fill=(255, 255, 255))  # highlight
        pen.line([(x - 22, y - 20), (x + 22, y - 20)], fill=(90, 60, 40), width=4)  # brow
        if earring:
            pen.ellipse((ear_x - 6, 252, ear_x + 6, 264), fill=(240, 200, 40))
    pen.line([MOUTH[0], MOUTH[1]], fill=(170, 70, 70), width=5)
    pen.line([(200, 190), NOSE], fill=(190, 150, 120), width=3)
    array = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.8))).astype(np.int16)
    array += rng.integers(-2, 3, size=array.shape, dtype=np.int16)  # a little sensor noise
    return np.clip(array, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ symmetry


def test_symmetric_face_scores_symmetric_and_mismatches_raise_it():
    face = face_at()
    symmetric = symmetry_check(drawn_face(), face)
    assert symmetric.score is not None and symmetric.score < 0.5
    assert "agree" in symmetric.explanation
    base = symmetry_features(drawn_face(), face)
    odd_iris = symmetry_features(drawn_face(right_iris=(120, 80, 40)), face)
    odd_highlight = symmetry_features(drawn_face(right_highlight=(4, 4)), face)
    one_earring = symmetry_features(drawn_face(earrings=(True, False)), face)
    assert odd_iris["iris_colour"] > base["iris_colour"] + 0.05
    assert odd_highlight["highlight_offset"] > base["highlight_offset"] + 0.05
    assert one_earring["ears"] > base["ears"] + 0.05
    # each weight may only push one way, so a mismatch can raise the score and never lower it
    for variant in (dict(right_iris=(120, 80, 40)), dict(earrings=(True, False)), dict(right_highlight=(4, 4))):
        assert symmetry_check(drawn_face(**variant), face).score >= symmetric.score
    assert symmetry_check(drawn_face(earrings=(True, False), right_highlight=(4, 4)), face).score > symmetric.score


def test_fitted_weights_respect_each_measurements_meaning():
    from gan_face.checks import background, spectrum, symmetry
    from gan_face.checks._weights import check_weights

    for module, name in ((symmetry, "symmetry"), (background, "background"), (spectrum, "spectrum")):
        evidence = check_weights(name)
        assert evidence.features == module.FEATURES
        for weight, sign in zip(evidence.weights, module.SIGNS):
            assert (sign != "+" or weight >= 0) and (sign != "-" or weight <= 0), (name, weight, sign)


def test_turned_head_is_not_called_asymmetric_for_being_turned():
    image = drawn_face()
    # turn the head: squeeze the face's right side towards the middle, as yaw foreshortens it
    squeezed = image.copy()
    right = image[:, 200:310]
    squeezed[:, 200:288] = np.asarray(Image.fromarray(right).resize((88, SIZE), Image.BILINEAR))
    squeezed[:, 288:310] = image[:, 310:332]
    turned_eyes = (EYES[0], (200 + (EYES[1][0] - 200) * 0.8, EYES[1][1]))
    turned = Face(
        (110.0, 100.0, 290.0, 330.0),
        0.999,
        Landmarks(turned_eyes[0], turned_eyes[1], (192.0, 225.0), MOUTH[0], (222.0, 268.0)),
    )
    result = symmetry_check(squeezed, turned)
    assert result.details["yaw"] != 0.0
    assert result.score is None or result.score < 0.5
    # a head turned past the comparable range is declined, not flagged
    far = Face(turned.box, 0.999, Landmarks(EYES[0], EYES[1], (240.0, 225.0), MOUTH[0], MOUTH[1]))
    declined = symmetry_check(image, far)
    assert declined.score is None and "turned" in declined.explanation


# ---------------------------------------------------------------------------------------------- background


def test_flat_backdrop_scores_blank_and_a_real_scene_does_not():
    face = face_at()
    flat = background_check(drawn_face("flat"), face)
    scene = background_check(drawn_face("scene"), face)
    assert "blank" in flat.explanation
    assert "as in a real scene" in scene.explanation
    assert flat.score > scene.score
    assert background_features(drawn_face("flat"), face)["edge_density"] < 0.02


def test_straight_lines_of_a_scene_count_and_smeared_blobs_do_not():
    face = face_at()
    scene = background_features(drawn_face("scene"), face)
    smeared = background_features(drawn_face("smeared"), face)
    assert scene["straight_lines"] > STRAIGHT_SCENE > 1.0 > smeared["straight_lines"]
    assert background_check(drawn_face("smeared"), face).score > background_check(drawn_face("scene"), face).score


def test_face_filling_the_frame_leaves_no_background():
    big = Face(
        (0.0, 0.0, 400.0, 400.0),
        0.999,
        Landmarks((120.0, 160.0), (280.0, 160.0), (200.0, 240.0), (140.0, 320.0), (260.0, 320.0)),
    )
    assert background_check(drawn_face(), big).score is None


# ------------------------------------------------------------------------------------------------ spectrum


def smooth_photo(seed=0, side=400) -> np.ndarray:
    """A 1/f-noise image: the power spectrum of natural photos, no periodic structure."""
    rng = np.random.default_rng(seed)
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side)))
    spectrum = (rng.normal(size=(side, side)) + 1j * rng.normal(size=(side, side))) / np.maximum(freq, 1 / side)
    field = np.real(np.fft.ifft2(spectrum))
    field = (field - field.mean()) / field.std() * 30 + 128
    return np.repeat(np.clip(field, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_upsampling_pattern_fires_and_jpeg_grid_alone_does_not():
    face = face_at()
    photo = smooth_photo()
    # what a transposed convolution leaves: a faint checkerboard with a 2-pixel period
    yy, xx = np.mgrid[:SIZE, :SIZE]
    checker = (((xx + yy) % 2) * 2 - 1) * 3
    upsampled = np.clip(photo.astype(int) + checker[:, :, None], 0, 255).astype(np.uint8)
    blocky = jpeg(photo, 20)  # strong 8x8 block grid

    def peaks(image):
        return spectrum_features(face_square(image, face))["periodic_peaks"]

    assert peaks(upsampled) > 3.0
    assert peaks(blocky) < 1.5
    assert peaks(photo) < 1.0
    fired = spectrum_check(upsampled, face)
    assert "Periodic peaks" in fired.explanation
    assert fired.score > spectrum_check(blocky, face).score
    assert fired.score > spectrum_check(photo, face).score


def test_spectrum_reads_native_resolution_and_declines_tiny_faces():
    tiny = Face(
        (0.0, 0.0, 20.0, 20.0), 0.99, Landmarks((5.0, 8.0), (13.0, 8.0), (9.0, 11.0), (6.0, 15.0), (12.0, 15.0))
    )
    assert spectrum_check(smooth_photo(side=40), tiny).score is None
    assert face_square(smooth_photo(), face_at()).shape[0] == 176  # 2.2 interocular distances, no resize


# -------------------------------------------------------------------------------------------------- common


def test_every_check_is_pure_and_explains_itself():
    image, face = drawn_face(), face_at()
    first = run_checks(image, face)
    again = run_checks(image.copy(), face)
    assert list(first) == list(CHECKS)
    for name, result in first.items():
        assert result.score == again[name].score, name  # same input, same answer
        assert result.explanation and result.explanation.endswith("."), name
        assert result.score is None or 0.0 <= result.score <= 1.0
        assert all(len(box) == 4 for _, box in result.regions), name
    no_face = run_checks(image, None)
    assert no_face["eyes"].score is None and no_face["symmetry"].score is None
    assert no_face["spectrum"].score is not None  # reads the whole frame when there is no face
