"""Finding images in paths and folders: the one file walker (scan, Ray, fine-tuning and data trees use it).

Inside a folder, a file is an image by its name or, failing that, by its content; other files (a README, a
manifest) are skipped and listed. Nothing found is dropped silently: what cannot be read (a dangling or looping
link, an unreadable folder, a folder named like an image) comes back as an :class:`InputFile` with its
``problem`` set, which a scan reports as an error row.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

log = logging.getLogger(__name__)

#: Names that announce an image. A file with one of these is always scanned (so a broken one is reported);
#: any other file is scanned only when its content is an image.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
)


@dataclass(frozen=True)
class InputFile:
    path: str  # where to read it
    display: str  # what the report calls it: relative to the folder given, or as given
    problem: Optional[str] = None  # why it cannot be read, when discovery already knows


@dataclass
class Discovery:
    """What a walk found: the files to score, in order, and what it passed over (not images, subfolders)."""

    files: list[InputFile] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    subfolders: list[str] = field(default_factory=list)  # left out because the walk was not recursive


def is_image_candidate(path: str | os.PathLike[str]) -> bool:
    """Whether a file in a folder should be scored: an image by its name or, failing that, by its content.

    Hidden files are skipped. Reading the header only, this costs one small read per file.
    """
    path = Path(path)
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path):
                return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def safe_text(text: str) -> str:
    """``text`` with undecodable bytes of a file name (surrogates) shown as backslash escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def discover(arguments: Sequence[str | os.PathLike[str]], *, recursive: bool = False) -> Discovery:
    """The files to scan, in a stable order: each argument in turn, a folder's images sorted by path.

    Rows are named relative to the folder given; when several paths are given, a folder's name as given is
    kept in front so that names cannot collide. Names that are not valid UTF-8 are shown with backslash
    escapes. Hidden files and folders (a leading dot) are skipped.
    """
    found = Discovery()
    for argument in map(os.fspath, arguments):
        if not os.path.isdir(argument):
            found.files.append(InputFile(argument, safe_text(argument)))
            continue
        prefix = argument if len(arguments) > 1 else ""
        for relative, problem in _walk(Path(argument), (), recursive, found):
            display = safe_text(os.path.join(prefix, *relative) if prefix else "/".join(relative))
            found.files.append(InputFile(os.path.join(argument, *relative), display, problem))
    return found


def collect_files(arguments: Sequence[str | os.PathLike[str]], *, recursive: bool = False) -> list[InputFile]:
    """The files :func:`discover` finds (see there), problems included."""
    return discover(arguments, recursive=recursive).files


def _walk(root: Path, parts: tuple[str, ...], recursive: bool, found: Discovery):
    """``(relative parts, problem)`` of the images below ``root / parts``, sorted by name at every level."""
    folder = root.joinpath(*parts)
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError as exc:
        if parts:  # an unreadable subfolder is a row, not a silent gap (the root's own error is the CLI's)
            yield parts, f"folder cannot be read ({exc.strerror or exc})"
            return
        raise
    for name in names:
        if name.startswith("."):
            continue
        relative = (*parts, name)
        path = root.joinpath(*relative)
        try:
            mode = os.stat(path).st_mode  # follows links
        except OSError as exc:
            if os.path.islink(path):
                reason = "symbolic link loop" if _is_loop(exc) else "broken symbolic link (its target is missing)"
                yield relative, reason
            else:
                yield relative, f"cannot be read ({exc.strerror or exc})"
            continue
        if stat.S_ISDIR(mode):
            if recursive:
                if os.path.islink(path) and _links_back(path, root):
                    yield relative, "symbolic link loop (links to a folder that contains it)"
                    continue
                yield from _walk(root, relative, recursive, found)
            elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield relative, "is a folder named like an image; use --recursive to scan inside it"
            else:
                found.subfolders.append("/".join(relative))
        elif not stat.S_ISREG(mode):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield relative, "not a regular file"
        elif is_image_candidate(path):
            yield relative, None
        else:
            log.info("skipping %s: not an image", path)
            found.not_images.append("/".join(relative))


def _is_loop(exc: OSError) -> bool:
    import errno

    return exc.errno == errno.ELOOP


def _links_back(path: Path, root: Path) -> bool:
    """Whether a linked folder is the root or one of the folders above ``path`` (walking it would never end)."""
    target = path.resolve()
    return target == root.resolve() or target in path.parent.resolve().parents or target == path.parent.resolve()
