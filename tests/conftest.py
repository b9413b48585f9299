"""Shared fixtures. Tests that need ../shared/data use the ``shared_data`` fixture, which skips without it."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GAN_FACE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """``gan-face scan`` run in-process (CliRunner) sets torch to one thread per operation, as the command should;
    later tests get the process's thread count back (numbers differ in the last digits between thread counts)."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "fake").is_dir():
        pytest.skip(f"needs the training data at {SHARED_DATA} (set GAN_FACE_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo of a face (Eileen Collins, NASA, public domain) that ships inside scikit-image."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory, astronaut) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="session")
def detector():
    from gan_face import Detector

    return Detector()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (10 gigapixels by default)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def broken_files(folder: Path, astronaut: np.ndarray) -> dict[str, Path]:
    """One file of each awkward kind, named by what it is; returns name -> path."""
    face = Image.fromarray(astronaut)
    jpeg = encode(face, "JPEG", quality=90)
    files = {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "text.jpg": b"this is not an image, whatever its name says\n" * 10,
        "bomb.png": png_bomb(),
        "cmyk.jpg": encode(face.convert("CMYK"), "JPEG", quality=90),
        "grey16.png": encode(Image.fromarray((np.asarray(face.convert("L")).astype(np.uint16) * 257)), "PNG"),
        "rgba.png": encode(face.convert("RGBA"), "PNG"),
        "animated.gif": _animated_gif(face),
        "rotated.jpg": _exif_rotated(face),
        "good.jpg": jpeg,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def _animated_gif(face: Image.Image) -> bytes:
    second = Image.new("RGB", face.size, (255, 0, 0))
    buffer = io.BytesIO()
    face.save(buffer, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return buffer.getvalue()


def _exif_rotated(face: Image.Image) -> bytes:
    """The face stored lying on its side, with EXIF orientation 6 saying 'rotate 90 degrees clockwise to view'."""
    stored = face.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=92, exif=exif.tobytes())


def face_tree(root: Path, astronaut: np.ndarray, n: int = 12) -> Path:
    """A tiny labelled tree without ../shared/data: ``real/framed`` holds the astronaut framed by a person
    (crops, sizes, JPEG qualities); ``fake/templated`` her face moved onto the StyleGAN eye template and blown up
    2x by pixel repetition (an upsampling trace). Enough faces per class for fine-tuning's minimum."""
    from gan_face.align import FaceAligner, align_face
    from gan_face.checks.eyes import TEMPLATE_MEAN

    face = FaceAligner().detect(astronaut)[0]
    eyes_mouth = TEMPLATE_MEAN.reshape(3, 2)
    template = np.array(
        [eyes_mouth[0], eyes_mouth[1], (eyes_mouth[0] + eyes_mouth[2]) / 2, eyes_mouth[2] - [0.06, 0],
         eyes_mouth[2] + [0.06, 0]]
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for i in range(n):
        side = 128 + 8 * i
        fake = align_face(astronaut, face.landmarks, side, template)
        fake = np.repeat(np.repeat(fake, 2, axis=0), 2, axis=1)
        (root / "fake" / "templated").mkdir(parents=True, exist_ok=True)
        Image.fromarray(fake).save(root / "fake" / "templated" / f"f{i:02d}.png")
        x0, y0 = rng.integers(0, 90, size=2)
        crop = astronaut[y0 : y0 + 360 + 4 * i, x0 : x0 + 360 + 4 * i]
        (root / "real" / "framed").mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).resize((200 + 10 * i,) * 2).save(
            root / "real" / "framed" / f"r{i:02d}.jpg", quality=70 + 2 * i
        )
    return root
