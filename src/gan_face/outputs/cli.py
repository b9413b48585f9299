"""The ``gan-face`` command: argument parsing and printing only; the work is done in ``scan`` and ``training``."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import click

from .. import __version__
from ..card import DEFAULT_MODEL, shipped_models
from ..detector import DEFAULT_BATCH_SIZE
from ..errors import GanFaceError, OutputExistsError, TrainingDataError, WeightsError
from ..io import DEFAULT_MAX_PIXELS

#: options scan and serve share: which model, its operating point, where it runs, which images are explained
weights_option = click.option(
    "--weights",
    help=f"A shipped model's name ({', '.join(shipped_models())}; default {DEFAULT_MODEL}) or a fine-tuned model "
    "(.safetensors or its .json card).",
)
threshold_option = click.option(
    "--threshold", type=click.FloatRange(0.0, 1.0), help="Flag images with likelihood >= T (default: the model's)."
)
device_option = click.option(
    "--device",
    default=None,
    help="OpenVINO device that runs the networks: cpu (default) or gpu (an Intel GPU); CUDA is not supported.",
)


def max_pixels_option(help: str):
    return click.option(
        "--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True, type=click.IntRange(1), help=help
    )


def threads_option(help: str):
    return click.option("--threads", type=click.IntRange(1, 1024), help=help)


def explain_option(command):
    """``--explain``, and ``--checks``, its old name (before 0.2), hidden and kept for one release."""
    command = click.option("--checks", "old_checks", type=click.Choice(["auto", "all"]), hidden=True)(command)
    return click.option(
        "--explain",
        type=click.Choice(["auto", "all"]),
        default="auto",
        show_default=True,
        help="Which images get the checks that only explain (no weight in the likelihood). auto: the flagged "
        "ones and those near the threshold (listed under not_computed elsewhere); all: every image.",
    )(command)


def _explain(explain: str, old_checks: Optional[str]) -> str:
    if old_checks is not None:
        click.echo("warning: --checks is now --explain", err=True)
        return old_checks
    return explain


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gan-face")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Tell whether face profile photos were made by a generator (a GAN or a diffusion model), with evidence a
    person can check."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Report file: .csv, .jsonl or .html (default: CSV on stdout).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "html"]),
    help="Report format (default: from -o's suffix).",
)
@click.option("-r", "--recursive", is_flag=True, help="Also scan the subfolders of folders.")
@threshold_option
@weights_option
@device_option
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(1, 1024))
@click.option("--resume", is_flag=True, help="Continue an interrupted scan: skip the files already in the report.")
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing report (only once the new scan has finished)."
)
@max_pixels_option("Refuse larger images (decompression bombs).")
@click.option(
    "--summary",
    is_flag=True,
    help="Print the network view (shared eye positions, landmark groups); with -o also save the mean faces "
    "as <out>.network.png.",
)
@threads_option(
    "CPU threads to use (default: $GAN_FACE_THREADS, else the CPUs this process may use: affinity and cgroup "
    "quota). Each thread decodes and scores whole batches; each network inference runs on one thread."
)
@explain_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def scan(
    paths: tuple[str, ...],
    output: Optional[str],
    fmt: Optional[str],
    recursive: bool,
    threshold: Optional[float],
    weights: Optional[str],
    device: Optional[str],
    batch_size: int,
    resume: bool,
    overwrite: bool,
    max_pixels: int,
    summary: bool,
    threads: Optional[int],
    explain: str,
    old_checks: Optional[str],
    quiet: bool,
) -> None:
    """Score images and folders of images; one report row per file, in input order.

    Exit status: 0 when every file was scored, 1 when some could not be read (their rows hold the error),
    2 on bad usage.
    """
    from PIL import Image

    from .._runtime import tune_allocator
    from ..files import discover
    from .account_network import AccountNetworkView
    from .scan import ScanInterrupted, check_output, format_for, run_scan

    tune_allocator()  # a command, not a library import: faster CNN batches on glibc machines
    # --max-pixels is this process's limit: Pillow's own bomb check (which only a Python caller could raise)
    # follows it, so a genuine large image the user allowed is not refused by a limit they cannot set
    Image.MAX_IMAGE_PIXELS = max(max_pixels, Image.MAX_IMAGE_PIXELS or 0)

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if resume and not output:
        raise click.UsageError("--resume needs -o")
    try:
        fmt = format_for(output, fmt)
        if output:
            check_output(output, resume=resume, overwrite=overwrite)
    except (ValueError, OutputExistsError) as exc:  # before the model loads: bad usage costs nothing
        raise click.UsageError(str(exc)) from None
    if fmt == "html" and not output:
        raise click.UsageError("an HTML report needs -o report.html")
    threads = _threads(threads)
    found = discover(paths, recursive=recursive)
    _warn_skipped(found.not_images, "files that are not images")
    _warn_skipped(found.subfolders, "subfolders (add --recursive to scan them)")
    files = found.files
    detector = _load_detector(weights, device, threshold, max_pixels, _explain(explain, old_checks), threads)
    network = AccountNetworkView() if summary else None
    try:
        result = run_scan(
            detector,
            files,
            output=output,
            fmt=fmt,
            resume=resume,
            overwrite=overwrite,
            batch_size=batch_size,
            progress=not quiet,
            network=network,
        )
    except OutputExistsError as exc:
        raise click.UsageError(str(exc)) from None
    except ScanInterrupted as stop:
        if output:
            kept = f"{stop.rows} row{'s' * (stop.rows != 1)} kept in {stop.partial}"
            hint = f"{kept}; run again with --resume to finish" if stop.rows else f"no row finished; {kept}"
        else:
            hint = f"stopped after {stop.rows} rows"
        click.echo(f"\ninterrupted: {hint}", err=True)
        sys.exit(130)
    if not quiet:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
        click.echo(
            f"{result.scored} scored ({statuses or 'none'}), {result.flagged} flagged as likely generated at "
            f"threshold {detector.threshold:.3f}, {result.cant_tell} can't tell, {result.failed} unreadable"
            + (f" ({result.skipped} of the scored rows kept from the interrupted run)" if result.skipped else "")
            + (f"; report: {output}" if output else ""),
            err=True,
        )
    if network is not None:
        click.echo(network.text(), err=True)
        if output:
            path = f"{output}.network.png"
            if network.save_mean_faces(path):
                click.echo(f"  mean faces (flagged | all, StyleGAN template in cyan): {path}", err=True)
    sys.exit(1 if result.failed else 0)


#: the [serve] extra's modules: an ImportError naming one of these means the extra is not installed
_SERVE_MODULES = {"fastapi", "uvicorn", "python_multipart", "starlette", "pydantic"}


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@weights_option
@threshold_option
@device_option
@threads_option(
    "CPU threads to score with, as for scan (default: $GAN_FACE_THREADS, else the CPUs this process may use)."
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024), help="Images per batch.")
@explain_option
@click.option(
    "--max-upload-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Largest request body, in MiB (refused with 413 while it is read).",
)
@click.option("--max-files", default=64, show_default=True, type=click.IntRange(1), help="Images per request.")
@max_pixels_option("Refuse larger images (413, from the header: decompression bombs).")
@click.option(
    "--max-queue", default=512, show_default=True, type=click.IntRange(1), help="Most images waiting (then 503)."
)
def serve(
    host: str,
    port: int,
    weights: Optional[str],
    threshold: Optional[float],
    device: Optional[str],
    threads: Optional[int],
    batch_size: int,
    explain: str,
    old_checks: Optional[str],
    max_upload_mb: float,
    max_files: int,
    max_pixels: int,
    max_queue: int,
) -> None:
    """Serve the detector: a page to drop avatars on (GET /) and an HTTP API (POST /v1/score, GET /v1/model,
    GET /healthz, OpenAPI schema at /openapi.json). Needs the serve extra: pip install "gan-face[serve]".
    """
    from PIL import Image

    from .._runtime import tune_allocator

    try:
        from . import serve as server
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _SERVE_MODULES:
            raise
        raise click.ClickException(
            f'gan-face serve needs the serve extra ({exc.name} is not installed): pip install "gan-face[serve]"'
        ) from None
    tune_allocator()
    Image.MAX_IMAGE_PIXELS = max(max_pixels, Image.MAX_IMAGE_PIXELS or 0)  # as for scan: --max-pixels rules
    threads = _threads(threads)
    try:
        sock = server.listen(host, port)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    limits = server.Limits(
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_files=max_files,
        max_pixels=max_pixels,
        max_queue=max_queue,
    )
    detector = _load_detector(weights, device, threshold, max_pixels, _explain(explain, old_checks), threads)
    url = server.url_of(sock)
    if not server.is_loopback(host):
        click.echo(
            f"warning: listening on {host}, not on loopback: anyone who can reach this machine on port "
            f"{sock.getsockname()[1]} can send it images and read its verdicts; there is no authentication. "
            "Use --host 127.0.0.1 unless that is what you want.",
            err=True,
        )
    click.echo(
        f"gan-face serve: model {detector.card.name}, threshold {detector.threshold:.4f}, {threads} threads; "
        f"open {url} in a browser (API schema: {url}openapi.json, browsable at {url}docs with Swagger UI, which "
        "loads from the internet). Ctrl-C stops it.",
        err=True,
    )
    server.serve(server.create_app(detector, limits, batch_size=batch_size), sock)


class ModelLoadError(click.ClickException):
    """The model (weights or card) cannot be used: bad input, not bad usage of the command line."""

    exit_code = 2

    def __init__(self, problem: str) -> None:
        super().__init__(f"cannot load the model: {problem}")


def _load_detector(weights, device, threshold, max_pixels, explain, threads):
    from ..detector import Detector

    try:
        return Detector(
            weights, device, threshold=threshold, max_pixels=max_pixels, explain=explain, threads=threads
        )
    except GanFaceError as exc:
        raise ModelLoadError(str(exc)) from None


def _threads(requested: Optional[int]) -> int:
    """The threads to score with: as requested, else ``$GAN_FACE_THREADS``, else the CPUs available."""
    from .._runtime import THREADS_ENV, configure_threads

    try:
        return configure_threads(requested)
    except ValueError as exc:
        raise click.UsageError(f"{exc} (from {THREADS_ENV})") from None


def _folder_option(flag: str, name: str, help: str):
    return click.option(flag, name, required=True, type=click.Path(exists=True, file_okay=False), help=help)


def _warn_skipped(names: list[str], what: str, shown: int = 5) -> None:
    if names:
        listed = ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")
        click.echo(f"warning: skipped {len(names)} {what}: {listed}", err=True)


@main.command()
@_folder_option("--real", "real_dir", "Folder of real photos (read recursively).")
@_folder_option("--fake", "fake_dir", "Folder of the new generator's faces (read recursively).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the fine-tuned weights (.safetensors; the card goes beside it as .json).",
)
@click.option(
    "--base",
    default="default",
    show_default=True,
    help="Model to start from: 'default', a shipped model's name (gan-face-v1) or a .safetensors/.json path.",
)
# defaults live in gan_face.training.finetune.FinetuneSettings (not imported here: the training wing loads only
# when this command runs); an option left out keeps that default
@click.option(
    "--samples-per-epoch",
    type=click.IntRange(32),
    help="Training faces drawn per epoch (default 1600; fewer: faster, rougher).",
)
@click.option("--epochs", type=click.IntRange(1, 100), help="Training epochs of the CNN (default 8).")
@click.option(
    "--cnn/--no-cnn",
    "train_cnn",
    default=None,
    help="Fine-tune the face CNN too (default: only for a base without a clip view, e.g. gan-face-v2; a base "
    "with one gets its clip head refitted instead).",
)
@click.option(
    "--head-emphasis",
    type=click.FloatRange(0, min_open=True),
    help="How many of the base model's sources your fakes (and your reals) count as in the refitted clip head "
    "(default 2).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.1, 0.6),
    help="Share held out (default 0.3): half to calibrate the threshold, half to report before/after.",
)
@click.option(
    "--base-val",
    type=click.Path(exists=True, file_okay=False),
    help="The base model's validation tree (real/ and fake/) to check what it keeps.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    help="Cache folder for detections and crops (default: a temporary folder).",
)
@click.option(
    "--device",
    default=None,
    help="OpenVINO device for the before/after scoring (default cpu); training runs on the CPU.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from its last finished epoch (kept in OUTPUT's .partial folder); the "
    "other options must be the same as that run's.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace existing output files (and, without --resume, an unfinished run)."
)
def finetune(
    real_dir,
    fake_dir,
    output,
    base,
    samples_per_epoch,
    epochs,
    train_cnn,
    head_emphasis,
    val_fraction,
    base_val,
    cache,
    device,
    resume,
    overwrite,
) -> None:
    """Adapt the model to a new generator from a few hundred of its faces, keeping what it knew.

    First checks the folders and says what they hold (image files, faces found, files skipped, whether there
    are enough real photos to recalibrate the threshold) and which steps will run. A base with a clip view
    (gan-face-v3) gets its clip head refitted on your training images added to the base's statistics (minutes);
    a base without one (or --cnn) gets its face CNN fine-tuned, with a checkpoint after every epoch. Ctrl-C keeps
    the clip features computed and the last finished epoch, and the same command with --resume continues from
    them. Prints what was refitted and the before/after table (AUC and TPR at 1% FPR on held-out images of the
    new generator, and on the base validation data when given). Use the result with:
    gan-face scan --weights OUTPUT ...
    """
    import os
    from pathlib import Path

    from .._runtime import tune_allocator

    tune_allocator()
    try:
        from ..training.finetune import (
            FinetuneSettings,
            clip_head_path,
            frame_weights_path,
            remove_partial,
            saved_progress,
        )
        from ..training.finetune import finetune as run_finetune
    except ImportError as exc:  # the training wing names the missing extra itself; anything else gets the hint
        message = str(exc)
        if "gan-face[train]" not in message:
            message = f'gan-face finetune needs the training extra ({exc}): pip install "gan-face[train]"'
        raise click.ClickException(message) from None
    target = Path(output).with_suffix(".safetensors")
    for path in (target, target.with_suffix(".json"), frame_weights_path(target), clip_head_path(target)):
        if path.exists() and not overwrite:
            raise click.UsageError(f"{path}: already exists (use --overwrite)")
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK | os.X_OK):
        raise click.UsageError(f"{output}: its folder {target.parent} does not exist or is not writable")
    given = {"epochs": epochs, "samples_per_epoch": samples_per_epoch, "val_fraction": val_fraction,
             "train_cnn": train_cnn, "head_emphasis": head_emphasis}  # fmt: skip
    settings = FinetuneSettings(progress=True, **{k: v for k, v in given.items() if v is not None})
    try:
        if overwrite and not resume:
            remove_partial(target)
        report = run_finetune(
            real_dir,
            fake_dir,
            target,
            base=None if base == "default" else base,
            settings=settings,
            base_validation=base_val,
            cache_dir=cache,
            device=device,
            resume=resume,
            on_checked=lambda check: click.echo(f"checked the folders:\n{check.summary()}", err=True),
        )
    except KeyboardInterrupt:
        _say_what_was_kept(saved_progress(target), click.get_current_context())
        sys.exit(130)  # the shell's code for "stopped by Ctrl-C"
    except WeightsError as exc:
        raise ModelLoadError(str(exc)) from None
    except TrainingDataError as exc:  # the folders or the options given cannot make this run
        raise click.UsageError(str(exc)) from None
    except GanFaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.table())
    click.echo(
        f"wrote {target} and {target.with_suffix('.json')} in {report.minutes:.1f} min; "
        f"use it with: gan-face scan --weights {target} ..."
    )


def _say_what_was_kept(progress: Optional[dict], ctx: click.Context) -> None:
    """After Ctrl-C: what the interrupted fine-tuning kept, and the command that continues it."""
    import shlex

    if progress is None:
        click.echo("\ninterrupted before anything was kept; nothing to resume", err=True)
        return
    options = {k: v for k, v in ctx.params.items() if k not in ("resume", "overwrite")}
    command = ["gan-face", "finetune"]
    for name, value in options.items():
        if name == "train_cnn" and value is not None:
            command.append("--cnn" if value else "--no-cnn")
        elif value is not None and not (name == "base" and value == "default"):
            flag = {"real_dir": "--real", "fake_dir": "--fake", "base_val": "--base-val"}.get(name)
            command += [flag or "--" + name.replace("_", "-"), str(value)]
    command.append("--resume")
    done, epochs, partial = progress["epochs_done"], progress["epochs"], progress["partial"]
    features = progress.get("features_done", 0)
    if done:
        kept = f"{done} of {epochs} epochs had finished; the last one's checkpoint is kept in {partial}/"
    elif features:
        kept = f"the clip features of {features} training images are kept in {partial}/"
    else:
        kept = (
            "no epoch had finished, so no training is kept; the faces found and crops cut so far are kept in "
            f"{ctx.params['cache'] or str(partial) + '/'}, so a resumed run gets to training sooner"
        )
    click.echo(f"\ninterrupted: {kept}. Continue with:\n  {shlex.join(command)}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
