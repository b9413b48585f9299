"""Benchmark scanning a folder of 400x400 JPEG avatars: full scan rate beside decode-only and detector-only.

    python scripts/bench.py [--data ../shared/data] [--n 400] [--memory 1000,10000] [--json bench.json]

Builds the folder once (the avatar condition of DESIGN.md: centre square, 400 px, JPEG 85, from the data tree's
images, or from scikit-image's astronaut when there is no data), then in one run measures on the same files:

* decode only: the scan's own parallel loader, nothing else;
* face detector only: MTCNN on the decoded images (decode excluded);
* full scan: ``gan-face scan`` end to end (decode, detection, CNN, every check, CSV rows);
* peak memory of a full scan in a fresh process, for each ``--memory`` folder size (files repeated by links).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build_folder(folder: Path, n: int, data: Path | None) -> list[Path]:
    from gan_face.io import load_image
    from gan_face.training.conditions import apply_condition

    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= n:
        return existing[:n]
    sources: list = []
    if data is not None and (data / "fake").is_dir():
        from gan_face.training.datasets import index_tree

        samples = index_tree(data)
        picks = np.random.default_rng(0).permutation(len(samples))[:n]
        sources = [samples[i].path for i in picks]
    paths = []
    for i in range(n):
        if sources:
            image = load_image(sources[i % len(sources)])
        else:
            from skimage import data as skdata

            image = skdata.astronaut()[:, ::-1] if i % 2 else skdata.astronaut()
        avatar = apply_condition(image, "avatar", seed=i)
        path = folder / f"avatar_{i:05d}.jpg"
        Image.fromarray(avatar).save(path, quality=85)
        paths.append(path)
    return paths


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def peak_memory_of_scan(folder: Path, size: int, base: list[Path]) -> dict:
    """Peak RSS of ``gan-face scan`` on a folder of ``size`` files (links to the base avatars)."""
    big = folder.parent / f"links_{size}"
    big.mkdir(exist_ok=True)
    for i in range(size):
        link = big / f"a_{i:06d}.jpg"
        if not link.exists():
            link.symlink_to(base[i % len(base)].resolve())
    out = Path(tempfile.mkdtemp()) / "scan.csv"
    code = (
        "import resource, sys; from gan_face.outputs.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "scan", str(big), "-o", str(out), "-q"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return {
        "files": size,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "seconds": round(seconds, 1),
        "images_per_s": round(rate(size, seconds), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n", type=int, default=400, help="avatars in the timed folder")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gan-face-bench")
    parser.add_argument("--memory", default="", help="comma-separated folder sizes for the peak-memory runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from gan_face._runtime import tune_allocator
    from gan_face.align import FaceAligner
    from gan_face.detector import Detector
    from gan_face.outputs.files import InputFile
    from gan_face.outputs.scan import decoded_batches, run_scan

    tune_allocator()
    import torch

    threads = torch.get_num_threads()
    files = build_folder(args.workdir / "avatars", args.n, args.data if args.data.exists() else None)
    inputs = [InputFile(str(p), p.name) for p in files]
    results: dict = {"n": len(files), "cpu_threads": threads, "batch_size": args.batch_size}

    start = time.perf_counter()
    decoded = [img for _, batch in decoded_batches(inputs, args.batch_size, None, 2) for img in batch]
    results["decode_only_per_s"] = rate(len(files), time.perf_counter() - start)

    aligner = FaceAligner()
    aligner.detect_batch(decoded[: args.batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(decoded), args.batch_size):
        aligner.detect_batch(decoded[i : i + args.batch_size])
    results["detector_only_per_s"] = rate(len(files), time.perf_counter() - start)
    del decoded

    detector = Detector()
    detector.score_arrays([np.asarray(Image.open(files[0]).convert("RGB"))])  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_scan(
            detector,
            inputs,
            output=str(Path(tmp) / "scan.csv"),
            fmt="csv",
            batch_size=args.batch_size,
            progress=False,
        )
        results["scan_per_s"] = rate(len(files), time.perf_counter() - start)
    results["scan_vs_decode"] = results["scan_per_s"] / results["decode_only_per_s"]
    results["flagged"] = summary.flagged

    print(f"{len(files)} avatars (400x400 JPEG q85), {threads} threads, batch {args.batch_size}")
    print(f"  decode only        {results['decode_only_per_s']:8.1f} images/s")
    print(f"  face detector only {results['detector_only_per_s']:8.1f} images/s")
    print(
        f"  full scan          {results['scan_per_s']:8.1f} images/s  "
        f"({results['scan_vs_decode']:.3f} of decode-only)"
    )
    memory = [int(s) for s in args.memory.split(",") if s]
    if memory:
        results["memory"] = [peak_memory_of_scan(args.workdir / "avatars", size, files) for size in memory]
        for row in results["memory"]:
            print(
                f"  peak memory, {row['files']:6d} files: {row['peak_rss_mib']:7.1f} MiB "
                f"({row['images_per_s']} images/s in a fresh process)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
