"""Benchmark ``gan-face serve`` under 64 concurrent clients beside ``gan-face scan`` on the same files, in one run.

    python scripts/bench_serve.py [--n 64] [--rounds 5] [--repeats 3] [--threads N] [--batch-size B]
                                  [--json bench_serve.json]

The files are the first ``--n`` avatars of ``scripts/bench.py``'s folder (400x400 JPEG q85, built there if it is
missing: ``$TMPDIR/gan-face-bench/avatars``). Measured:

* ``gan-face serve --port 0`` in a fresh process (its start-up time) and one request to warm it; then, alternated
  ``--repeats`` times, so that a drift of the machine's speed weighs on both sides (the server idles meanwhile):
* ``gan-face scan`` in a fresh process on the ``n`` files, and on the same files repeated ``--rounds`` times
  (links), start-up included, as a user runs it; the difference of the two is the scan's rate without its
  start-up (the strictest reference: a server has started before the clients come);
* ``--rounds`` rounds of ``n`` clients at once, each POSTing one file to ``/v1/score`` on its own connection
  (bodies built before the clock starts): every answer's status, each round's wall time, the rate over the
  rounds, and the CPU time per image of the server and of the clients (this process) beside the scan's (the
  difference of the two scans' CPU time: start-up out);
* every served likelihood beside the scan's for the same file (they must be equal), ``/healthz`` afterwards, and
  the server's exit status on Ctrl-C (SIGINT).

The target (issue 23): all answers 200, and the served rate at least 0.8 of the scan's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

CLI = "from gan_face.outputs.cli import main; main()"


def gan_face(*args: str) -> list[str]:
    """The command line of ``gan-face ARGS`` with this interpreter (``PYTHONPATH=src`` measures this tree)."""
    return [sys.executable, "-c", CLI, *args]


def linked(folder: Path, files: list[Path], copies: int) -> Path:
    """A folder holding exactly ``files``, ``copies`` times over (symbolic links, one name per copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for path in files:
            link = folder / (path.name if copies == 1 else f"r{copy}_{path.name}")
            if not link.exists():
                link.symlink_to(path.resolve())
    return folder


def timed_scan(folder: Path, out: Path, threads: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        gan_face("scan", str(folder), "-o", str(out), "-q", "--overwrite", *threads),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"scan failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
    body = head.encode() + b"Content-Type: image/jpeg\r\n\r\n" + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, kind: str, timeout: float = 300) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/score", body=body, headers={"Content-Type": kind})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def one_round(port: int, bodies: list[tuple[str, bytes, str]]) -> tuple[float, dict[str, tuple[int, dict]]]:
    """``len(bodies)`` clients at once, one request each; the round's wall time and each client's answer."""
    barrier = threading.Barrier(len(bodies) + 1)
    answers: dict[str, tuple[int, dict]] = {}

    def client(name: str, body: bytes, kind: str) -> None:
        barrier.wait()
        try:
            answers[name] = post(port, body, kind)
        except Exception as exc:  # noqa: BLE001  counted as lost below
            answers[name] = (0, {"error": f"{type(exc).__name__}: {exc}"})

    threads = [threading.Thread(target=client, args=b) for b in bodies]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, answers


def start_server(log: Path, threads: list[str], batch_size: int | None) -> tuple[subprocess.Popen, int, float]:
    start = time.perf_counter()
    batch = [] if batch_size is None else ["--batch-size", str(batch_size)]
    with open(log, "w") as handle:
        process = subprocess.Popen(
            gan_face("serve", "--port", "0", *batch, *threads),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        text = log.read_text()
        if "open http://" in text and "Application startup complete" in text:
            url = text.split("open ", 1)[1].split()[0]
            return process, int(url.rstrip("/").rsplit(":", 1)[1]), time.perf_counter() - start
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its threads so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gan-face-bench")
    parser.add_argument("--n", type=int, default=64, help="avatars, and clients at once")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of n clients (and copies in the long scan)")
    parser.add_argument("--repeats", type=int, default=3, help="times scan and serve are measured, alternated")
    parser.add_argument("--threads", type=int, help="CPU threads of both (default: the CPUs available)")
    parser.add_argument("--batch-size", type=int, help="the server's batch size (default: gan-face serve's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the scan's rate without start-up is a difference of two)")

    from gan_face.training.bench_folder import build_folder  # the avatar folder of scripts/bench.py

    files = build_folder(args.workdir / "avatars", max(args.n, 1), args.data if args.data.exists() else None)
    files = files[: args.n]
    n, served = len(files), len(files) * args.rounds
    work = Path(tempfile.mkdtemp(prefix="gan-face-bench-serve-"))
    short = linked(work / "once", files, 1)
    long = linked(work / f"x{args.rounds}", files, args.rounds)
    threads = ["--threads", str(args.threads)] if args.threads else []
    results: dict = {
        "n": n,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "load_before": os.getloadavg()[0],
    }
    bodies = [(p.name, *multipart(p.name, p.read_bytes())) for p in files]
    runs: list[dict] = []
    statuses: dict[int, int] = {}
    equal = lost = 0

    process, port, startup = start_server(work / "serve.log", threads, args.batch_size)
    try:
        results["serve_startup_s"] = round(startup, 2)
        status, _ = post(port, *multipart(files[0].name, files[0].read_bytes()))  # warm
        assert status == 200, status
        for _ in range(args.repeats):  # the server waits, idle, while the scans run
            run: dict = {}
            cpu = children_cpu_s()
            run["scan_once_s"] = timed_scan(short, work / "once.jsonl", threads)
            once_cpu, cpu = children_cpu_s() - cpu, children_cpu_s()
            run["scan_long_s"] = timed_scan(long, work / "long.jsonl", threads)
            run["scan_cpu_s_per_image"] = (children_cpu_s() - cpu - once_cpu) / (served - n)  # start-up out
            scanned = {r["path"]: r["likelihood"] for r in map(json.loads, (work / "once.jsonl").open())}
            walls = []
            server_cpu, client_cpu = process_cpu_s(process.pid), self_cpu_s()
            for _ in range(args.rounds):
                wall, answers = one_round(port, bodies)
                walls.append(wall)
                lost += n - len(answers)
                for name, (status, body) in answers.items():
                    statuses[status] = statuses.get(status, 0) + 1
                    equal += status == 200 and body["rows"][0]["likelihood"] == scanned[name]
            run["server_cpu_s_per_image"] = (process_cpu_s(process.pid) - server_cpu) / served
            run["client_cpu_s_per_image"] = (self_cpu_s() - client_cpu) / served
            run["round_walls_s"] = [round(w, 2) for w in walls]
            run["scan_per_s"] = n / run["scan_once_s"]
            run["scan_long_per_s"] = served / run["scan_long_s"]
            run["scan_without_startup_per_s"] = (served - n) / (run["scan_long_s"] - run["scan_once_s"])
            run["serve_per_s"] = served / sum(walls)
            run["serve_vs_scan"] = run["serve_per_s"] / run["scan_per_s"]
            run["serve_vs_scan_long"] = run["serve_per_s"] / run["scan_long_per_s"]
            run["serve_vs_scan_without_startup"] = run["serve_per_s"] / run["scan_without_startup_per_s"]
            runs.append(run)
        health = get(port, "/healthz")
        up = process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        try:
            exit_status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_status = "killed"

    def median(key: str) -> float:
        return float(statistics.median(run[key] for run in runs))

    results.update(
        runs=runs,
        **{
            key: median(key)
            for key in (
                "scan_per_s",
                "scan_long_per_s",
                "scan_without_startup_per_s",
                "serve_per_s",
                "serve_vs_scan",
                "serve_vs_scan_long",
                "serve_vs_scan_without_startup",
                "scan_cpu_s_per_image",
                "server_cpu_s_per_image",
                "client_cpu_s_per_image",
            )
        },
        statuses={str(k): v for k, v in statuses.items()},
        lost=lost,
        likelihoods_equal_to_scan=f"{equal}/{served * args.repeats}",
        healthz_after=health,
        server_up_after=up,
        server_exit_status=exit_status,
        load_after=os.getloadavg()[0],
    )

    print(f"{n} avatars (400x400 JPEG q85), {args.repeats} x ({args.rounds} rounds of {n} clients at once)")
    print(f"  load average before/after         {results['load_before']:.2f} / {results['load_after']:.2f}")
    print("  medians of the repeats (each: the scans, then the rounds):")
    many = n * args.rounds
    print(f"  gan-face scan, {n} files            {results['scan_per_s']:7.1f} images/s (start-up included)")
    print(
        f"  gan-face scan, {many} files           {results['scan_long_per_s']:7.1f} images/s (start-up included)"
    )
    print(f"  gan-face scan, without start-up   {results['scan_without_startup_per_s']:7.1f} images/s")
    print(f"  gan-face serve, {n} at once         {results['serve_per_s']:7.1f} images/s")
    print(
        f"  serve / scan: {results['serve_vs_scan']:.2f} ({n} files), {results['serve_vs_scan_long']:.2f} ({many} "
        f"files), {results['serve_vs_scan_without_startup']:.2f} (without start-up); target >= 0.8"
    )
    cpu = {k: 1000 * results[f"{k}_cpu_s_per_image"] for k in ("scan", "server", "client")}
    print(
        f"  CPU ms per image: scan {cpu['scan']:.1f} (without start-up), server {cpu['server']:.1f}, clients "
        f"{cpu['client']:.1f}"
    )
    for i, run in enumerate(runs):
        print(f"  run {i}: scan {run['scan_long_per_s']:.1f}/s, without start-up "
              f"{run['scan_without_startup_per_s']:.1f}/s; serve {run['serve_per_s']:.1f}/s (rounds "
              f"{run['round_walls_s']} s); ratios {run['serve_vs_scan_long']:.2f}, "
              f"{run['serve_vs_scan_without_startup']:.2f}")  # fmt: skip
    print(f"  answers {results['statuses']}, lost {lost}, likelihoods equal to the scan's "
          f"{results['likelihoods_equal_to_scan']}")  # fmt: skip
    print(f"  server start-up {startup:.1f} s; up after: {up}; /healthz {health}; exit on SIGINT: {exit_status}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = statuses == {200: served * args.repeats} and lost == 0 and equal == served * args.repeats
    return 0 if ok and up and exit_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
