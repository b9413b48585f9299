"""Benchmark scanning a folder of 400x400 JPEG avatars, as a user runs it, beside decode-only and detector-only.

    python scripts/bench.py [--data ../shared/data] [--n 1000] [--threads N] [--memory 1000,10000]
                            [--profile 256] [--json bench.json]

Builds the folder once (the avatar condition of DESIGN.md: centre square, 400 px, JPEG 85, from the data tree's
images, or from scikit-image's astronaut when there is no data), then measures on the same files in one run:

* decode only: the files decoded by as many threads as the scan uses, nothing else;
* face detector only: the model's face detector on the decoded images (decode excluded), one worker per core
  with one thread per network inference, as the scan runs it (checkouts that run torch: also one worker with a
  torch thread per core; the faster is the reference);
* full scan: ``gan-face scan FOLDER -o scan.csv`` in a fresh process, start-up included (its peak memory too);
* ``--baseline OLD/src``: the full scan of another checkout (``git archive a4cebd4 src | tar -x -C old``),
  alternated with this one's (``--repeats`` each), and the ratio of their medians;
* two scans started together on the same files (separate reports): their combined rate, beside one alone;
* ``--compare A.json,B.json``: full scans with each model card, alternated (A B A B ...), so that models are
  compared in the same run under the same load;
* with an OpenVINO GPU device, the full scan again with ``--device gpu`` and its largest likelihood difference
  from the CPU's (else it says it was not measured; CUDA is not a device of the OpenVINO runtime);
* ``--memory``: peak memory of full scans of larger folders (files repeated by links);
* ``--profile N``: CPU time per image of each stage (decode, face detection per pyramid level, alignment, CNN,
  each check, fusion, CSV rows) on N files, one thread: where the time goes.

It runs with whatever code ``gan_face`` imports (``PYTHONPATH=src`` for this tree), so an older checkout can be
measured the same way if it has ``gan_face.training.bench_folder`` (the folder's builder; an older one through
``--baseline``); ``--scan-args`` adds options to the scans (for example ``--explain all``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


SCAN_CODE = (
    "import os, resource, sys, time; start = time.perf_counter()\n"
    # another checkout's code (on PYTHONPATH): the scan refuses to run if gan_face comes from elsewhere (a
    # missing folder falls through to this checkout's install, and the baseline would measure this checkout)
    "code = os.environ.get('GAN_FACE_BENCH_CODE')\n"
    "if code:\n"
    "    import gan_face\n"
    "    if not os.path.realpath(gan_face.__file__).startswith(os.path.realpath(code) + os.sep):\n"
    "        sys.exit(f'gan_face was imported from {gan_face.__file__}, not from {code}')\n"
    "from gan_face.outputs.cli import main\n"
    "try:\n    main()\n    status = 0\nexcept SystemExit as exc:\n    status = exc.code\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start, status)\n"
)


def start_scan(folder: Path, out: Path, extra: list[str], code: Path | None = None) -> subprocess.Popen:
    """``gan-face scan folder -o out -q`` in a fresh Python process (``code``: another checkout's ``src``)."""
    command = [sys.executable, "-c", SCAN_CODE, "scan", str(folder), "-o", str(out), "-q", "--overwrite", *extra]
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code), "GAN_FACE_BENCH_CODE": str(code)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_scan(process: subprocess.Popen, start: float, files: int) -> dict:
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"scan failed ({process.returncode}): {stderr[-2000:]}")
    peak_kib, _, status = stdout.strip().splitlines()[-1].split()
    if status not in ("0", "None"):  # a scan that stopped (a model that does not load) is not a fast scan
        raise RuntimeError(f"scan exited with {status}: {stderr[-2000:]}")
    return {
        "files": files,
        "seconds": round(seconds, 2),
        "images_per_s": round(rate(files, seconds), 2),
        "peak_rss_mib": round(int(peak_kib) / 1024, 1),
    }


def timed_scans(
    folder: Path, files: int, extra: list[str], copies: int = 1, code: Path | None = None
) -> list[dict]:
    """``copies`` scans of ``folder`` started together; each one's figures (its own wall time) and report."""
    work = Path(tempfile.mkdtemp(prefix="gan-face-bench-"))
    start = time.perf_counter()
    processes = [start_scan(folder, work / f"scan{i}.csv", extra, code) for i in range(copies)]
    scans = [
        {**finish_scan(p, start, files), "report": str(work / f"scan{i}.csv")} for i, p in enumerate(processes)
    ]
    for scan in scans:
        scan["second_look_share"] = second_look_share(scan["report"])
    return scans


def second_look_share(report: str) -> float | None:
    """The share of a scan report's images that took the model's second look (a ``check_second_look`` score);
    ``None`` for a model (or a checkout) without one."""
    import csv

    with open(report, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "check_second_look" not in rows[0]:
        return None
    return sum(bool(row["check_second_look"]) for row in rows) / len(rows)


def share_text(scan: dict) -> str:
    share = scan.get("second_look_share")
    return "" if share is None else f"; second look {share:.1%} of images"


def largest_log_odds_difference(report_a: str, report_b: str) -> float:
    """The largest difference in log-odds between two scan reports' likelihoods of the same files (where both
    are within [1e-4, 1 - 1e-4]: the report rounds to 6 decimals, too coarse for log-odds beyond)."""
    import csv

    def read(path: str) -> dict[str, float]:
        with open(path, newline="") as handle:
            return {row["path"]: float(row["likelihood"]) for row in csv.DictReader(handle) if row["likelihood"]}

    a, b = read(report_a), read(report_b)
    common = sorted(set(a) & set(b))
    if not common:
        return float("nan")
    pa, pb = (np.array([d[k] for k in common]) for d in (a, b))
    inside = (np.minimum(pa, pb) >= 1e-4) & (np.maximum(pa, pb) <= 1 - 1e-4)
    pa, pb = pa[inside], pb[inside]
    return float(np.abs(np.log(pa / (1 - pa)) - np.log(pb / (1 - pb))).max()) if inside.any() else float("nan")


def linked_folder(base: list[Path], size: int) -> Path:
    big = base[0].parent.parent / f"links_{size}"
    big.mkdir(exist_ok=True)
    for i in range(size):
        link = big / f"a_{i:06d}.jpg"
        if not link.exists():
            link.symlink_to(base[i % len(base)].resolve())
    return big


def set_torch_threads(n: int) -> None:
    """For checkouts that score with torch (``--baseline``'s); the OpenVINO runtime does not import it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def detector_rate(aligner, decoded: list, batch_size: int, workers: int) -> float:
    """Images per second of the face detector alone over ``decoded``, ``workers`` batches at a time."""
    batches = [decoded[i : i + batch_size] for i in range(0, len(decoded), batch_size)]
    aligner.detect_batch(batches[0])  # warm-up
    start = time.perf_counter()
    if workers == 1:
        for batch in batches:
            aligner.detect_batch(batch)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(aligner.detect_batch, batches))
    return rate(len(decoded), time.perf_counter() - start)


def decode_all(files: list[Path], threads: int) -> list[np.ndarray]:
    """Every file decoded by the library's loader on ``threads`` threads (Pillow decodes outside the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from gan_face.io import load_image

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(load_image, files))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n", type=int, default=1000, help="avatars in the timed folder")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gan-face-bench")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the CPUs available, as the scan does)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--scan-args",
        default="",
        help="extra options for the scans, e.g. '--explain all' (its old name, --checks, for older checkouts)",
    )
    parser.add_argument("--no-pair", action="store_true", help="skip the two-scans-at-once run")
    parser.add_argument("--compare", default="", help="comma-separated model cards to scan with, alternated")
    parser.add_argument(
        "--repeats", type=int, default=2, help="scans per model card (--compare) or code (--baseline)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="another checkout's src folder, scanned alternately with this"
    )
    parser.add_argument("--memory", default="", help="comma-separated folder sizes for the peak-memory runs")
    parser.add_argument("--profile", type=int, default=0, help="files for the per-stage CPU profile")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from gan_face._runtime import tune_allocator
    from gan_face.detector import Detector

    try:
        from gan_face._runtime import resolve_threads
    except ImportError:  # a checkout from before --threads: it used the CPUs it saw
        resolve_threads = None
    tune_allocator()
    threads = resolve_threads(args.threads) if resolve_threads else (args.threads or os.cpu_count() or 1)
    extra = shlex.split(args.scan_args) + (["--threads", str(args.threads)] if args.threads else [])
    from gan_face.training.bench_folder import build_folder  # imported here, as every gan_face import

    files = build_folder(args.workdir / "avatars", args.n, args.data if args.data.exists() else None)
    folder = files[0].parent
    if len(list(folder.glob("*.jpg"))) != len(files):  # the scan reads the folder: make it hold just these
        folder = linked_folder(files, len(files))
    results: dict = {
        "n": len(files),
        "threads": threads,
        "batch_size": args.batch_size,
        "scan_args": extra,
        "load_before": os.getloadavg()[0],
    }

    start = time.perf_counter()
    decoded = decode_all(files, threads)
    results["decode_only_per_s"] = rate(len(files), time.perf_counter() - start)

    try:  # the model's own face-search settings, each network able to run one inference per worker at once
        aligner = Detector(threads=threads).aligner
    except TypeError:  # a checkout from before workers
        aligner = Detector().aligner
    set_torch_threads(1)
    results["detector_only_ways"] = {
        f"{threads} workers x 1 thread": detector_rate(aligner, decoded, args.batch_size, threads)
    }
    if "torch" in sys.modules:  # a checkout that scores with torch: its thread team too
        set_torch_threads(threads)
        results["detector_only_ways"][f"1 worker x {threads} torch threads"] = detector_rate(
            aligner, decoded, args.batch_size, 1
        )
    results["detector_only_per_s"] = max(results["detector_only_ways"].values())
    del decoded, aligner

    (scan,) = timed_scans(folder, len(files), extra)
    results["scan"] = scan
    results["scan_per_s"] = scan["images_per_s"]
    results["scan_vs_detector"] = results["scan_per_s"] / results["detector_only_per_s"]
    results["scan_vs_decode"] = results["scan_per_s"] / results["decode_only_per_s"]
    if not args.no_pair:
        pair = timed_scans(folder, len(files), extra, copies=2)
        combined = rate(2 * len(files), max(p["seconds"] for p in pair))
        results["two_scans"] = pair
        results["two_scans_combined_per_s"] = combined
        results["two_scans_vs_one"] = combined / results["scan_per_s"]

    cards = [c for c in args.compare.split(",") if c]
    if cards:
        runs: dict[str, list[float]] = {card: [] for card in cards}
        shares: dict[str, float | None] = {}
        for _ in range(args.repeats):
            for card in cards:
                (one,) = timed_scans(folder, len(files), extra + ["--weights", card])
                runs[card].append(one["images_per_s"])
                shares[card] = one["second_look_share"]
        results["compare"] = {
            card: {"runs_per_s": v, "median_per_s": float(np.median(v)), "second_look_share": shares[card]}
            for card, v in runs.items()
        }

    if args.baseline:
        runs = {"this checkout": [], str(args.baseline): []}
        for _ in range(args.repeats):
            for code in (None, args.baseline):
                (one,) = timed_scans(folder, len(files), extra, code=code)
                runs["this checkout" if code is None else str(args.baseline)].append(one)
        this, old = (float(np.median([r["images_per_s"] for r in v])) for v in runs.values())
        results["baseline"] = {
            "code": str(args.baseline),
            "runs_per_s": {k: [r["images_per_s"] for r in v] for k, v in runs.items()},
            "peak_rss_mib": {k: max(r["peak_rss_mib"] for r in v) for k, v in runs.items()},
            "second_look_share": {k: v[0]["second_look_share"] for k, v in runs.items()},
            "speedup": this / old,
            "largest_log_odds_difference": largest_log_odds_difference(
                runs["this checkout"][0]["report"], runs[str(args.baseline)][0]["report"]
            ),
        }

    from gan_face.graphs.runtime import openvino  # without OpenVINO's usage telemetry, as the scans import it

    core = openvino().Core()
    gpus = [d for d in core.available_devices if d.startswith("GPU")]
    if gpus:
        (gpu,) = timed_scans(folder, len(files), extra + ["--device", "gpu"])
        gpu["largest_log_odds_difference_from_cpu"] = largest_log_odds_difference(scan["report"], gpu["report"])
        results["gpu"] = {**gpu, "device": core.get_property(gpus[0], "FULL_DEVICE_NAME")}
    else:
        results["gpu"] = None
    results["load_after"] = os.getloadavg()[0]

    print(f"{len(files)} avatars (400x400 JPEG q85), {threads} threads, batch {args.batch_size} {' '.join(extra)}")
    print(f"  load average before/after   {results['load_before']:.2f} / {results['load_after']:.2f}")
    print(f"  decode only        {results['decode_only_per_s']:8.1f} images/s")
    for way, value in results["detector_only_ways"].items():
        print(f"  face detector only {value:8.1f} images/s  ({way})")
    print(
        f"  full scan          {results['scan_per_s']:8.1f} images/s  (gan-face scan, start-up included: "
        f"{results['scan_vs_detector']:.3f} of detector-only, {results['scan_vs_decode']:.3f} of decode-only; "
        f"peak {scan['peak_rss_mib']:.0f} MiB{share_text(scan)})"
    )
    if "two_scans" in results:
        print(
            f"  two scans at once  {results['two_scans_combined_per_s']:8.1f} images/s combined  "
            f"({results['two_scans_vs_one']:.3f} of one scan alone; each "
            + ", ".join(f"{p['seconds']:.1f} s" for p in results["two_scans"])
            + ")"
        )
    for card, row in results.get("compare", {}).items():
        runs_text = ", ".join(f"{v:.1f}" for v in row["runs_per_s"])
        print(f"  full scan, {Path(card).stem:14s} {row['median_per_s']:8.1f} images/s median ({runs_text}"
              f"{share_text(row)})")  # fmt: skip
    if "baseline" in results:
        base = results["baseline"]
        for code, values in base["runs_per_s"].items():
            runs_text = ", ".join(f"{v:.1f}" for v in values)
            share = {"second_look_share": base["second_look_share"][code]}
            print(f"  full scan, {code}: {np.median(values):8.1f} images/s median ({runs_text}); "
                  f"peak {base['peak_rss_mib'][code]:.0f} MiB{share_text(share)}")  # fmt: skip
        print(
            f"  speed-up over the baseline  {base['speedup']:.2f}x; largest likelihood difference "
            f"{base['largest_log_odds_difference']:.4f} in log-odds"
        )
    if results["gpu"]:
        gpu = results["gpu"]
        print(
            f"  full scan on GPU   {gpu['images_per_s']:8.1f} images/s  ({gpu['device']}; largest difference "
            f"from the CPU's likelihoods {gpu['largest_log_odds_difference_from_cpu']:.4f} in log-odds)"
        )
    else:
        print("  full scan on GPU   not measured (no OpenVINO GPU device here; CUDA is not an OpenVINO device)")

    memory = [int(s) for s in args.memory.split(",") if s]
    if memory:
        results["memory"] = [timed_scans(linked_folder(files, size), size, extra)[0] for size in memory]
        for row in results["memory"]:
            print(
                f"  peak memory, {row['files']:6d} files: {row['peak_rss_mib']:7.1f} MiB "
                f"({row['images_per_s']} images/s, fresh process)"
            )
    if args.profile:
        results["profile_ms_per_image"] = profile_stages(files[: args.profile], args.batch_size)
        print(f"  CPU time per image, one thread, {min(args.profile, len(files))} files (ms):")
        for stage, ms in results["profile_ms_per_image"].items():
            print(f"    {stage:40s} {ms:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def profile_stages(files: list[Path], batch_size: int) -> dict[str, float]:
    """CPU milliseconds per image of each stage of a scan, on one thread (``time.thread_time``: other load on
    the machine does not count, though it still slows the caches)."""
    import io
    from collections import defaultdict

    from gan_face.checks import CHECKS
    from gan_face.detector import Detector
    from gan_face.io import load_image
    from gan_face.outputs.report import CsvRowWriter, columns_for, verdict_row

    set_torch_threads(1)
    spent: dict[str, float] = defaultdict(float)
    clock = time.thread_time
    detector = Detector()
    aligner = detector.aligner

    def timing(call, key):
        def wrapper(x, *rest):
            start = clock()
            out = call(x, *rest)
            spent[key(x)] += clock() - start
            return out

        return wrapper

    keys = {
        "pnet": lambda x: f"detect: P-Net at {x.shape[2]}x{x.shape[3]}",
        "rnet": lambda x: "detect: R-Net",
        "onet": lambda x: "detect: O-Net",
    }
    if hasattr(aligner, "nets"):  # the OpenVINO runtime: the networks are callables in a dataclass
        import dataclasses

        aligner.nets = dataclasses.replace(
            aligner.nets, **{name: timing(getattr(aligner.nets, name), key) for name, key in keys.items()}
        )
    else:  # checkouts that ran torch modules
        nets = aligner if hasattr(aligner, "pnet") else aligner._mtcnn
        for name, key in keys.items():
            module = getattr(nets, name)
            module.forward = timing(module.forward, key)
    detector.score(str(files[0]))  # warm-up
    spent.clear()
    handle = io.StringIO()
    writer = CsvRowWriter(handle, columns_for(detector.evidence_names))
    for i in range(0, len(files), batch_size):
        start = clock()
        images = [load_image(str(p)) for p in files[i : i + batch_size]]
        spent["decode"] += clock() - start
        start = clock()
        for image in images:
            aligner._letterbox(image)
        spent["detect: letterbox to the detector's size"] += clock() - start
        start = clock()
        all_faces = aligner.detect_batch(images)
        spent["detect: total"] += clock() - start
        mains = [faces[0] if faces else None for faces in all_faces]
        learnt: list[dict] = [{} for _ in images]
        for name, network in detector.views.items():
            start = clock()
            results = network.score_faces(images, mains)
            spent[f"{name}: {network.config.view} crops and forward"] += clock() - start
            for found, result in zip(learnt, results):
                found[name] = result
        checks = []
        for image, face in zip(images, mains):
            found = {}
            for name in detector.check_names:
                start = clock()
                found[name] = CHECKS[name](image, face)
                spent[f"check: {name}"] += clock() - start
            checks.append(found)
        start = clock()
        verdicts = [detector._verdict(*args) for args in zip(images, all_faces, learnt, checks)]
        spent["fusion and verdict"] += clock() - start
        start = clock()
        for k, verdict in enumerate(verdicts):
            writer.write(verdict_row(str(k), verdict, detector.evidence_names))
        spent["CSV rows"] += clock() - start
    nets_total = sum(v for k, v in spent.items() if k.startswith("detect: ") and "Net" in k)
    letterbox = spent["detect: letterbox to the detector's size"]
    spent["detect: other (NMS, crops for R/O-Net, Python)"] = spent["detect: total"] - nets_total - letterbox
    n = len(files)
    order = sorted(spent, key=lambda k: (not k.startswith("decode"), not k.startswith("detect"), k))
    return {k: round(1000 * spent[k] / n, 2) for k in order}


if __name__ == "__main__":
    sys.exit(main())
