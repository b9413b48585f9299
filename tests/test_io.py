import io
import time

import numpy as np
import pytest
from conftest import broken_files, encode, png_bomb
from PIL import Image

from gan_face.errors import (
    CorruptImageError,
    GanFaceError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedInputError,
)
from gan_face.files import is_image_candidate
from gan_face.io import load_image


def test_every_input_type_gives_the_same_pixels(tmp_path, astronaut):
    path = tmp_path / "face.png"
    Image.fromarray(astronaut).save(path)
    data = path.read_bytes()
    expected = astronaut
    for source in (
        str(path),
        path,
        data,
        bytearray(data),
        memoryview(data),
        io.BytesIO(data),
        Image.open(path),
        astronaut,
        open(path, "rb"),
    ):
        loaded = load_image(source)
        assert loaded.dtype == np.uint8 and loaded.shape == expected.shape
        assert np.array_equal(loaded, expected), type(source)


def test_file_recognised_by_content_not_name(tmp_path, astronaut):
    path = tmp_path / "actually_a_png.jpg.txt"
    path.write_bytes(encode(Image.fromarray(astronaut), "PNG"))
    assert load_image(path).shape == astronaut.shape
    assert is_image_candidate(path)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert not is_image_candidate(notes)


@pytest.mark.parametrize(
    "name, error",
    [
        ("empty.jpg", CorruptImageError),
        ("truncated.jpg", CorruptImageError),
        ("text.jpg", NotAnImageError),
        ("bomb.png", ImageTooLargeError),
    ],
)
def test_broken_files_raise_typed_errors_naming_the_file(tmp_path, astronaut, name, error):
    path = broken_files(tmp_path, astronaut)[name]
    with pytest.raises(error) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, GanFaceError)


def test_bomb_is_refused_fast_and_the_limit_can_be_raised():
    bomb = png_bomb(20_000, 20_000)  # 400 MP claimed, a few hundred bytes on disk
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        load_image(bomb)
    assert time.perf_counter() - start < 0.5
    # above Pillow's own hard limit too: still our typed error
    with pytest.raises(ImageTooLargeError):
        load_image(png_bomb(), max_pixels=None)
    small = png_bomb(3000, 3000)
    with pytest.raises(ImageTooLargeError):
        load_image(small, max_pixels=1_000_000)
    with pytest.raises(CorruptImageError):  # allowed through, then found to hold no real pixel data
        load_image(small, max_pixels=10_000_000)


def test_awkward_modes_become_rgb(tmp_path, astronaut):
    files = broken_files(tmp_path, astronaut)
    for name in ("cmyk.jpg", "grey16.png", "rgba.png", "animated.gif", "good.jpg"):
        image = load_image(files[name])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert image.shape[:2] == astronaut.shape[:2], name
        # the face's brightness survives each conversion (a mode handled wrongly goes black or white)
        assert abs(image.mean() - astronaut.mean()) < 25, name


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 16).astype(np.uint16).reshape(16, 256)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    image = load_image(path)
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    assert 120 < image[:, 128, 0].mean() < 136


def test_exif_rotation_is_applied(tmp_path, astronaut):
    path = broken_files(tmp_path, astronaut)["rotated.jpg"]
    with Image.open(path) as raw:
        lying = np.asarray(raw.convert("RGB")).astype(int)
    image = load_image(path).astype(int)
    # stored on its side, the pixels differ wildly from the upright face; once EXIF is applied they match
    assert np.abs(lying - astronaut).mean() > 40
    assert np.abs(image - astronaut).mean() < 8


def test_exif_rotation_changes_shape_of_non_square(tmp_path, astronaut):
    wide = Image.fromarray(astronaut[:, :, :]).crop((0, 0, 512, 300))
    stored = wide.transpose(Image.Transpose.ROTATE_90)  # 300 wide, 512 high
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "wide.jpg"
    path.write_bytes(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert load_image(path).shape == (300, 512, 3)


def test_transparency_goes_on_neutral_grey():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    out = load_image(rgba)
    assert (out == 128).all()
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert (load_image(encode(palette, "PNG")) == 128).all()
    la = Image.new("LA", (8, 8), (255, 255))
    assert (load_image(la) == 255).all()


def test_first_frame_of_animation(tmp_path, astronaut):
    image = load_image(broken_files(tmp_path, astronaut)["animated.gif"])
    assert image[..., 0].mean() < 200  # the red second frame would be ~255


def test_array_inputs():
    grey = np.full((10, 12), 7, dtype=np.uint8)
    assert load_image(grey).shape == (10, 12, 3)
    assert load_image(grey[:, :, None]).shape == (10, 12, 3)
    assert load_image(np.ones((4, 4, 3), dtype=np.float32))[0, 0, 0] == 255
    assert load_image(np.full((4, 4, 3), 65535, dtype=np.uint16))[0, 0, 0] == 255
    with pytest.raises(UnsupportedInputError, match="float"):
        load_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(UnsupportedInputError):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(UnsupportedInputError):
        load_image(np.zeros((4, 4, 3), dtype=np.int64))
    with pytest.raises(UnsupportedInputError):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedInputError, match="binary"):
        load_image(io.StringIO("text mode"))  # type: ignore[arg-type]


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ImageNotFoundError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageNotFoundError, match="folder"):
        load_image(tmp_path)
    assert issubclass(ImageNotFoundError, FileNotFoundError)


def test_dark_sixteen_bit_stays_dark(tmp_path):
    dark = np.full((8, 8), 200, dtype=np.uint16)  # 200 of 65535: nearly black, though below 256
    path = tmp_path / "dark16.png"
    Image.fromarray(dark).save(path)
    assert load_image(path).max() <= 1
    assert load_image(dark).max() <= 1
