"""Shared fixtures. Tests that need ../shared/data use the ``shared_data`` fixture, which skips without it."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GAN_FACE_DATA", REPO.parent / "shared" / "data"))


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


# The README's test line installs no torch ([test]): the tests that train or import gan_face.training, or compare
# with a torch reference, skip without it and say what to install. One test: @needs_training or
# @needs_references; a whole module: pytest.importorskip("torch", reason=TRAIN_EXTRA), the same for "sklearn",
# before it imports them.
HAS_TRAINING = installed("torch", "sklearn")
HAS_REFERENCES = installed("torch", "torchvision", "facenet_pytorch")
TRAIN_EXTRA = 'needs torch and scikit-learn (the training extra): pip install ".[train]"'
REFERENCES = 'needs torchvision and facenet-pytorch (the torch references): pip install ".[dev]"'
needs_training = pytest.mark.skipif(not HAS_TRAINING, reason=TRAIN_EXTRA)
needs_references = pytest.mark.skipif(not HAS_REFERENCES, reason=REFERENCES)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """``gan-face scan`` run in-process (CliRunner) sets torch to one thread per operation, as the command should;
    later tests get the process's thread count back (numbers differ in the last digits between thread counts)."""
    if not installed("torch"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium (package ``chromium``); tests that need it skip without it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Chromium is not installed (Debian package: chromium)")
    return found


def chromium_flags(profile: Path) -> list[str]:
    """Headless, offline, with a fresh profile: nothing is fetched but the page under test."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


class DevTools:
    """One page of headless Chromium driven over its DevTools protocol (``websocket-client``): load a URL, run
    JavaScript, give a file input files, take a screenshot. Use as a context manager; the browser is ended."""

    def __init__(self, chromium: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        import websocket

        self.width, self.height = width, height
        self.process = subprocess.Popen(
            [chromium, *chromium_flags(profile), "--remote-debugging-port=0", f"--window-size={width},{height}",
             "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port = self._port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
                page = next(t for t in json.load(answer) if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._id = 0
        self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )

    def _port(self, path: Path, timeout: float = 60) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode}")
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events in between are not needed
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120):
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout=60)

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Give the file input ``selector`` these files as a person picking them would: its change event fires."""
        found = self.call("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.call("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=found["result"]["objectId"])

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "DevTools":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
