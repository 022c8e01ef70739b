"""Walking an image folder: every entry under it, recursively, named by its path relative to it.

An image's id is that relative path with `/` between parts (`2024/05/a.jpg`), so photos of
the same name in different sub-folders are different images, and a flat folder's ids are
its file names. What is walked is what ingest lists: nothing under a folder is passed
over without a row of its own (hidden entries and files that are not images are listed as
ignored, with the reason).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache

SYSTEM_FILE_NAMES = {"thumbs.db", "desktop.ini", "ehthumbs.db"}


@cache
def image_extensions() -> frozenset[str]:
    """Give the file-name endings of every format PIL reads (`.jpg`, `.png`, `.webp`, `.heic`, ...)."""
    from PIL import Image

    import tuwen.files.images  # noqa: F401 - registers the HEIF opener

    return frozenset(ext for ext, name in Image.registered_extensions().items() if name in Image.OPEN)


def is_system_file(name: str) -> bool:
    """Tell whether a folder entry is a hidden or OS bookkeeping file, not data."""
    return name.startswith(".") or name.lower() in SYSTEM_FILE_NAMES


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions()


def folder_entries(folder: str | os.PathLike) -> Iterator[str]:
    """Give every file under `folder` and every hidden sub-folder (not entered), as relative
    paths, sorted; a symbolic link to a folder is not followed."""
    root = os.fspath(folder)
    for here, folders, files in os.walk(root):
        relative = os.path.relpath(here, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        hidden = sorted(f for f in folders if is_system_file(f))
        folders[:] = sorted(f for f in folders if not is_system_file(f))
        yield from (prefix + name for name in hidden)
        yield from (prefix + name for name in sorted(files))


def has_image_file(folder: str | os.PathLike) -> bool:
    """Tell whether any file under `folder` has an image format's ending (stops at the first)."""
    return any(
        is_image_name(name) and not is_system_file(os.path.basename(name)) for name in folder_entries(folder)
    )


def folder_stamp(folder: str | os.PathLike) -> str:
    """Give what changes when a file is added to or removed from any folder under `folder`:
    the latest modification time of its folders (files are not stat'ed)."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        return ""
    latest = os.stat(root).st_mtime_ns
    for here, folders, _ in os.walk(root):
        folders[:] = [f for f in folders if not is_system_file(f)]
        for name in folders:
            latest = max(latest, os.stat(os.path.join(here, name)).st_mtime_ns)
    return str(latest)
