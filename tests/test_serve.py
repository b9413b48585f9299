"""``gan-face serve``: the API through FastAPI's test client (good, junk, oversized, empty, many at once), a real
server on loopback (rows equal to ``gan-face scan``'s, 64 requests at once), and its page in headless Chromium."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import DevTools, encode, png_bomb
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from gan_face.card import DEFAULT_MODEL  # noqa: E402
from gan_face.outputs.report import columns_for, jsonl_line, verdict_row  # noqa: E402
from gan_face.outputs.serve import Limits, create_app  # noqa: E402

GAN_FACE = os.path.join(os.path.dirname(sys.executable), "gan-face")
MIB = 2**20


def _avatars(folder: Path, astronaut: np.ndarray, n: int) -> list[Path]:
    """``n`` small avatars of the astronaut (crops, flips, 176-300 px), fast to score."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        x0, y0 = rng.integers(0, 140, size=2)
        side = int(rng.integers(300, 512 - max(x0, y0)))
        crop = astronaut[y0 : y0 + side, x0 : x0 + side]
        crop = crop[:, ::-1] if i % 2 else crop
        size = 176 + (i * 8) % 128
        path = folder / f"avatar{i:02d}.jpg"
        Image.fromarray(np.ascontiguousarray(crop)).resize((size, size)).save(path, quality=85)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def avatars(tmp_path_factory, astronaut) -> list[Path]:
    return _avatars(tmp_path_factory.mktemp("serve-avatars"), astronaut, 64)


@pytest.fixture(scope="module")
def served_detector():
    from gan_face import Detector

    return Detector(explain="auto")  # as gan-face scan and gan-face serve score


@pytest.fixture(scope="module")
def client(served_detector):
    app = create_app(served_detector, Limits(max_upload_bytes=2 * MIB, max_files=8))
    with TestClient(app) as test_client:
        yield test_client


def _post(client, *parts):
    return client.post("/v1/score", files=list(parts))


def _part(field: str, name: str, data: bytes):
    return (field, (name, data, "application/octet-stream"))


def _good(client, avatar: Path) -> dict:
    answer = _post(client, _part("file", avatar.name, avatar.read_bytes()))
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["rows"]
    return row


def test_one_image_gives_the_scan_row(client, served_detector, avatars):
    avatar = avatars[0]
    answer = _post(client, _part("file", avatar.name, avatar.read_bytes()))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    (row,) = answer.json()["rows"]
    names = served_detector.evidence_names
    expected = json.loads(
        jsonl_line(verdict_row(avatar.name, served_detector.score(avatar), names), columns_for(names))
    )
    assert list(row) == list(expected)  # the keys of a JSONL row, in its order
    assert row == expected
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Row"]["properties"]
    assert list(schema) == list(row)  # the OpenAPI schema names every key of a row, in order
    assert row["likelihood"] is not None and row["face"]["landmarks"]["left_eye"]


@pytest.mark.parametrize(
    "name, make, status, code, words",
    [
        ("notes.jpg", lambda a: b"this is not an image, just text\n" * 20, 415, "not_an_image", "not an image"),
        ("empty.jpg", lambda a: b"", 422, "corrupt_image", "empty file"),
        ("cut.jpg", lambda a: encode(Image.fromarray(a), "JPEG")[:3000], 422, "corrupt_image", "truncated"),
        ("bomb.png", lambda a: png_bomb(), 413, "too_many_pixels", "pixels"),
        ("huge.jpg", lambda a: b"\xff\xd8" + bytes(3 * MIB), 413, "upload_too_large", "the limit of 2 MiB"),
    ],
)  # fmt: skip
def test_bad_uploads_get_a_4xx_naming_the_problem_and_the_server_goes_on(
    client, avatars, astronaut, name, make, status, code, words
):
    answer = _post(client, _part("file", name, make(astronaut)))
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code and words in body["detail"]
    if code != "upload_too_large":  # the body is refused before any file in it is read
        assert body["detail"].startswith(f"{name}: ")
    assert _good(client, avatars[1])["likelihood"] is not None  # the next request still works


def test_a_body_without_length_is_cut_off_at_the_limit(client, avatars):
    sent = []

    def chunks():  # no Content-Length: the limit is counted while the body is read
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for _ in range(64):
            sent.append(1)
            yield bytes(64 * 1024)
        yield b"\r\n--x--\r\n"

    answer = client.post(
        "/v1/score", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert answer.status_code == 413 and answer.json()["error"] == "upload_too_large"
    assert _good(client, avatars[2])["path"] == avatars[2].name


def test_request_level_mistakes(client, avatars):
    good = avatars[3].read_bytes()
    none = client.post("/v1/score")
    assert none.status_code == 400 and none.json()["error"] == "no_file" and "'file'" in none.json()["detail"]
    text = client.post("/v1/score", data={"file": "avatar.jpg"})
    assert text.status_code == 400 and "file" in text.json()["detail"]
    two = _post(client, _part("file", "a.jpg", good), _part("file", "b.jpg", good))
    assert two.status_code == 400 and "'files'" in two.json()["detail"]
    many = _post(client, *[_part("files", f"{i}.jpg", good) for i in range(9)])
    assert (
        many.status_code == 413
        and many.json()["error"] == "too_many_files"
        and "limit is 8" in many.json()["detail"]
    )
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert _good(client, avatars[3])["path"] == avatars[3].name


def test_many_at_once_keep_their_order_and_a_broken_one_is_a_row(client, avatars):
    chosen = avatars[4:10]
    parts = [_part("files", p.name, p.read_bytes()) for p in chosen[:3]]
    parts.append(_part("files", "junk.jpg", b"junk" * 100))
    parts += [_part("files", p.name, p.read_bytes()) for p in chosen[3:]]
    answer = _post(client, *parts)
    assert answer.status_code == 200
    rows = answer.json()["rows"]
    assert [r["path"] for r in rows] == [p.name for p in chosen[:3]] + ["junk.jpg"] + [p.name for p in chosen[3:]]
    junk = rows[3]
    assert junk["error"].startswith("junk.jpg: not an image") and junk["likelihood"] is None
    assert all(r["likelihood"] is not None and r["error"] is None for r in rows[:3] + rows[4:])
    assert rows[0] == _good(client, chosen[0])  # the same row alone as in a batch


def test_health_model_card_and_openapi(client, served_detector):
    assert client.get("/healthz").json() == {"status": "ok", "model": DEFAULT_MODEL, "waiting": 0}
    card = client.get("/v1/model").json()
    assert card["name"] == served_detector.card.name and card["threshold"] == served_detector.threshold
    assert card["evidence"] == list(served_detector.evidence_names)
    avatar = card["evaluation"]["conditions"]["avatar"]["all"]
    assert 0.9 < avatar["auc"] <= 1 and avatar["n_real"] > 0
    assert card["limits"]["max_upload_bytes"] == 2 * MIB and card["limits"]["max_files"] == 8
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/score"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = schema["components"]["schemas"][form]["properties"]
    assert set(fields) == {"file", "files"}
    assert {"200", "400", "413", "415", "422", "503"} <= set(post["responses"])
    row = schema["components"]["schemas"]["Row"]["properties"]
    assert set(columns_for(served_detector.evidence_names)) <= set(row) and "face" in row
    error = post["responses"]["415"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/ErrorBody")
    assert {"/", "/healthz", "/v1/model", "/v1/cards"} <= set(schema["paths"])


def test_the_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'type="file"' in html and "v1/cards" in html and "Save CSV" in html
    assert "http://" not in html and "https://" not in html  # no CDN: it works offline


def test_cards_are_drawn_as_in_the_html_report(client, avatars):
    answer = client.post("/v1/cards", files=[_part("files", avatars[5].name, avatars[5].read_bytes())])
    (item,) = answer.json()["items"]
    assert "data:image/jpeg;base64," in item["card"] and 'class="template"' in item["card"]
    assert 'class="lm left_eye"' in item["card"] and avatars[5].name in item["card"]
    assert json.loads(item["jsonl"]) == item["row"] == _good(client, avatars[5])
    assert item["csv"].startswith(avatars[5].name + ",") and answer.json()["csv_header"].startswith("path,")


#: A command-line option as prose names it (``--explain all``, ``--max-pixels``); ``--`` in the page's script
#: (``inFlight--``) is not followed by a letter.
COMMAND_LINE_OPTION = re.compile(r"--[a-z]")


def test_the_page_gives_no_command_line_advice(client, avatars, astronaut):
    """Its users have no terminal: neither the page nor the cards it shows name a command-line option."""
    page = client.get("/").text
    assert not COMMAND_LINE_OPTION.findall(page)
    bomb = ("files", ("bomb.png", png_bomb(), "image/png"))
    answer = client.post("/v1/cards", files=[_part("files", avatars[6].name, avatars[6].read_bytes()), bomb])
    good, refused = answer.json()["items"]
    assert good["row"]["not_computed"] == "symmetry background spectrum"  # an everyday cleared avatar
    assert good["card"].count("Not computed") == 1  # one line naming the skipped checks, not one per check
    assert "Not computed (no weight in the likelihood): symmetry, background, spectrum" in good["card"]
    assert "bomb.png: more pixels than this server accepts" in refused["card"]
    for item in (good, refused):
        assert not COMMAND_LINE_OPTION.findall(item["card"]), item["card"]
    assert "--max-pixels" in refused["row"]["error"]  # the row stays the scan's row, word for word


def test_a_full_queue_answers_503(served_detector, avatars):
    app = create_app(served_detector, Limits(max_queue=1))
    with TestClient(app) as busy:
        data = avatars[0].read_bytes()
        answer = busy.post("/v1/score", files=[_part("files", "a.jpg", data), _part("files", "b.jpg", data)])
        assert answer.status_code == 503 and answer.json()["error"] == "busy"
        assert busy.post("/v1/score", files=[_part("file", "a.jpg", data)]).status_code == 200


def test_uploads_leave_no_file_behind(client, avatars, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the multipart parser would spool
    big = Image.open(avatars[0]).resize((1400, 1400))
    data = encode(big, "PNG")  # over the parser's 1 MiB in memory: spooled to a temporary file
    assert MIB < len(data) < 2 * MIB
    assert _post(client, _part("file", "big.png", data)).status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_serve_without_the_extra_names_it():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'fastapi':\n"
        "            raise ImportError('blocked: ' + name, name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from gan_face.outputs.cli import main\n"
        "main(['serve', '--port', '0'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and 'pip install "gan-face[serve]"' in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


class _CountingDetector:
    """What the batcher needs of a Detector, recording each batch: the result of an image is its width."""

    max_pixels = None

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.batches: list[int] = []

    def score_batch(self, items, *, source):
        from gan_face.detector import Scored
        from gan_face.io import load_image

        self.batches.append(len(items))
        time.sleep(0.05)
        images = [load_image(source(item)) for item in items]
        return [Scored(item, image, image.shape[1]) for item, image in zip(items, images)]


def test_the_batcher_splits_what_waits_and_gathers_what_comes_together():
    from gan_face.outputs.serve import Batcher, Upload

    def upload(width: int) -> Upload:
        return Upload(f"{width}.png", encode(Image.new("RGB", (width, 8)), "PNG"))

    shared = _CountingDetector(threads=2)
    batcher = Batcher(shared, batch_size=4, max_queue=100)
    futures = batcher.submit([upload(10 + i) for i in range(20)])
    assert [f.result(timeout=60).result for f in futures] == [10 + i for i in range(20)]  # each its own answer
    assert sum(shared.batches) == 20 and max(shared.batches) <= 4 and len(shared.batches) >= 5
    batcher.close()

    alone = _CountingDetector(threads=1)
    batcher = Batcher(alone, batch_size=4, gather_s=0.5)
    first = batcher.submit([upload(7)])
    time.sleep(0.05)  # the second request comes just after the first: they share a batch
    second = batcher.submit([upload(9)])
    assert [f.result(timeout=60).result for f in first + second] == [7, 9] and alone.batches == [2]
    last = batcher.submit([upload(5)])
    batcher.close()  # what was submitted before closing is still answered
    assert last[0].result(timeout=0).result == 5
    with pytest.raises(Exception, match="shutting down"):
        batcher.submit([upload(3)])


# ------------------------------------------------------------------------------------ a real server on loopback


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``gan-face serve --port 0`` in its own process, as a user starts it; its URL."""
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [GAN_FACE, "serve", "--host", "127.0.0.1", "--port", "0"], stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 180
        url = None
        while url is None and time.time() < deadline and process.poll() is None:
            text = log.read_text()
            if "open http://" in text and "Application startup complete" in text:
                url = text.split("open ", 1)[1].split()[0]
            time.sleep(0.2)
        assert url, log.read_text()
        yield url
        assert process.poll() is None, log.read_text()  # still up after everything the tests sent
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()


def _multipart(field: str, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, data in files:
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'.encode()
        )
        body.write(b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def _score(url: str, field: str, files: list[tuple[str, bytes]], timeout: float = 180) -> tuple[int, dict]:
    body, kind = _multipart(field, files)
    request = urllib.request.Request(url + "v1/score", data=body, headers={"Content-Type": kind}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture(scope="module")
def scanned(server, avatars, tmp_path_factory):
    """``gan-face scan`` of a few avatars and a broken file: its JSONL and CSV rows by path."""
    folder = tmp_path_factory.mktemp("scanned")
    for avatar in avatars[:5]:
        (folder / avatar.name).write_bytes(avatar.read_bytes())
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = folder.parent / (folder.name + "-scan")
    out.mkdir()
    names = sorted(p.name for p in folder.iterdir())  # by name: an error names the file as the server does
    for suffix in ("jsonl", "csv"):
        done = subprocess.run(
            [GAN_FACE, "scan", *names, "-o", str(out / f"scan.{suffix}"), "-q"], cwd=folder, timeout=300
        )
        assert done.returncode == 1  # the broken file
    jsonl = {row["path"]: row for row in map(json.loads, (out / "scan.jsonl").read_text().splitlines())}
    csv_lines = (out / "scan.csv").read_text().splitlines(keepends=True)
    return folder, jsonl, csv_lines


def test_served_rows_equal_the_scan_rows(server, scanned):
    folder, jsonl, _ = scanned
    files = sorted(folder.iterdir())
    status, body = _score(server, "files", [(p.name, p.read_bytes()) for p in files])
    assert status == 200
    assert [r["path"] for r in body["rows"]] == [p.name for p in files]
    for row in body["rows"]:
        assert row == jsonl[row["path"]]  # every key and value, the likelihood to the last digit
    for path in files[:2]:  # and one by one
        status, alone = _score(server, "file", [(path.name, path.read_bytes())])
        assert status == 200 and alone["rows"][0]["likelihood"] == jsonl[path.name]["likelihood"]


def test_64_requests_at_once_are_all_answered(server, avatars):
    barrier = threading.Barrier(len(avatars))
    answers: dict[str, tuple[int, dict]] = {}

    def client(path: Path) -> None:
        data = path.read_bytes()
        barrier.wait(timeout=60)
        answers[path.name] = _score(server, "file", [(path.name, data)])

    threads = [threading.Thread(target=client, args=(p,)) for p in avatars]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    elapsed = time.time() - started
    assert not any(t.is_alive() for t in threads)
    assert len(answers) == 64, f"{64 - len(answers)} requests lost"
    for name, (status, body) in answers.items():
        assert status == 200, body
        assert [r["path"] for r in body["rows"]] == [name]  # each client got its own image's row
        (row,) = body["rows"]
        assert row["error"] is None and row["status"] in {"ok", "no_face", "multiple_faces", "low_quality"}, row
    with urllib.request.urlopen(server + "healthz", timeout=30) as health:
        assert json.load(health) == {"status": "ok", "model": DEFAULT_MODEL, "waiting": 0}
    print(f"64 concurrent requests answered in {elapsed:.1f} s")


def test_the_page_scores_a_dropped_avatar_in_chromium(server, scanned, chromium, tmp_path):
    folder, jsonl, csv_lines = scanned
    picked = sorted(folder.iterdir())  # five avatars and a broken file
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with DevTools(chromium, tmp_path / "profile", width=1280, height=900) as page:
        page.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        page.open(server)
        page.set_files("#pick", picked)
        page.wait_for(f"document.querySelectorAll('.card:not(.pending)').length === {len(picked)}")
        cards = page.evaluate(
            "[...document.querySelectorAll('.card')].map(c => ({path: c.dataset.path, text: c.innerText, "
            "flagged: c.classList.contains('flagged'), rings: c.querySelectorAll('circle.template').length, "
            "landmarks: c.querySelectorAll('circle.lm').length}))"
        )
        summary = page.evaluate("document.getElementById('summary').textContent")
        badge = page.evaluate(
            "(() => { const r = document.querySelector('.card .badge').getBoundingClientRect(); "
            "return [r.left, r.top, r.right, r.bottom]; })()"
        )
        thumb = page.evaluate(
            "(() => { const r = document.querySelector('.card .frame').getBoundingClientRect(); "
            "return [r.left, r.top, r.right, r.bottom]; })()"
        )
        png = page.screenshot()
        page.evaluate("document.getElementById('save-csv').click()")
        deadline = time.time() + 30
        while not (downloads / "gan-face.csv").exists() and time.time() < deadline:
            time.sleep(0.2)
    # the DOM shows each verdict as the API and the CLI give it, in the order picked
    assert [c["path"] for c in cards] == [p.name for p in picked]
    flagged = sum(bool(jsonl[p.name]["synthetic"]) for p in picked)
    assert summary == f"{len(picked)} images: {flagged} flagged, 1 unreadable."
    for card in cards:
        row = jsonl[card["path"]]
        if row["error"]:
            assert f"Could not be read: {row['error']}" in card["text"]
            continue
        assert f"likelihood {row['likelihood']:.3f}" in card["text"] and card["flagged"] == row["synthetic"]
        assert (f"flagged: {row['verdict']}" if row["synthetic"] else row["verdict"]) in card["text"]
        assert row["reason"].split(":")[0] in card["text"] and "cnn" in card["text"]
        assert card["rings"] == 2 and card["landmarks"] == 5
    # the screenshot: a page of the expected size, not blank, the first verdict's badge in its colour, the
    # thumbnail with its cyan template rings and yellow landmarks drawn on it
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert image.shape == (900, 1280, 3) and image.std() > 20
    x0, y0, x1, y1 = (int(round(v)) for v in badge)
    colour = np.median(image[y0:y1, x0:x1].reshape(-1, 3), axis=0)
    badges = {"likely generated": (0xFD, 0xEC, 0xEA), "can't tell": (0xFF, 0xF4, 0xE0)}
    expected = badges.get(jsonl[picked[0].name]["verdict"], (0xE8, 0xF5, 0xE9))
    assert np.abs(colour - expected).max() <= 12, colour
    x0, y0, x1, y1 = (int(round(v)) for v in thumb)
    region = image[y0:y1, x0:x1]
    assert region.std() > 20  # a photo, not an empty box
    cyan = (np.abs(region - (0, 220, 255)) <= 40).all(axis=2).sum()
    yellow = (np.abs(region - (255, 212, 0)) <= 40).all(axis=2).sum()
    assert cyan > 20 and yellow > 10, (cyan, yellow)
    keep = os.environ.get("GAN_FACE_KEEP_SCREENSHOT")
    if keep:
        Path(keep).with_suffix(".serve.png").write_bytes(png)
    # Save CSV gives the scan's CSV, row for row
    saved = (downloads / "gan-face.csv").read_text().splitlines(keepends=True)
    assert saved[0] == csv_lines[0]
    assert saved[1:] == csv_lines[1:]
