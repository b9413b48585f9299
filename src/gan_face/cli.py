"""The ``gan-face`` command: argument parsing and printing only; the work is done in ``scan`` and ``train``."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import click

from . import __version__
from .errors import GanFaceError
from .io import DEFAULT_MAX_PIXELS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gan-face")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Tell whether face profile photos were made by a GAN, with evidence a person can check."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Report file: .csv or .jsonl (default: CSV on stdout).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Report format (default: from -o's suffix).")
@click.option("-r", "--recursive", is_flag=True, help="Also scan the subfolders of folders.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), help="Flag images with likelihood >= T (default: the model's).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="A fine-tuned model (.safetensors or its .json card).")
@click.option("--device", default=None, help="torch device, e.g. cuda (default: cpu).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024))
@click.option("--resume", is_flag=True, help="Continue an interrupted scan: skip the files already in the report.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report (only once the new scan has finished).")
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True, type=click.IntRange(1), help="Refuse larger images (decompression bombs).")
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
    quiet: bool,
) -> None:
    """Score images and folders of images; one report row per file, in input order.

    Exit status: 0 when every file was scored, 1 when some could not be read (their rows hold the error),
    2 on bad usage.
    """
    from .detector import Detector
    from .scan import OutputExistsError, collect_files, format_for, run_scan

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if resume and not output:
        raise click.UsageError("--resume needs -o")
    files = collect_files(paths, recursive=recursive)
    try:
        detector = Detector(weights=weights, device=device, threshold=threshold, max_pixels=max_pixels)
    except GanFaceError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        summary = run_scan(
            detector,
            files,
            output=output,
            fmt=format_for(output, fmt),
            resume=resume,
            overwrite=overwrite,
            batch_size=batch_size,
            progress=not quiet,
        )
    except OutputExistsError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the rows so far are kept; run again with --resume to finish", err=True)
        sys.exit(130)
    if not quiet:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items()))
        click.echo(
            f"{summary.scored} scored ({statuses or 'none'}), {summary.flagged} flagged as GAN-generated at "
            f"threshold {detector.threshold:.3f}, {summary.failed} unreadable"
            + (f", {summary.skipped} already in the report" if summary.skipped else "")
            + (f"; report: {output}" if output else ""),
            err=True,
        )
    sys.exit(1 if summary.failed else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
