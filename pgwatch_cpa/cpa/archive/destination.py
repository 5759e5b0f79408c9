"""Where exports go: one fsspec URL (``file:///srv/archive``, ``s3://bucket/prefix``) and durable writes to it.

A local write is durable when it returns: the bytes go to ``<path>.tmp``, are fsynced, renamed over ``<path>`` and
the directory is fsynced, so a crash leaves either the whole file or none (and maybe a ``.tmp`` that the discard
of its batch removes). An object store's PUT is atomic and durable on success. fsspec calls block; the archiver
runs them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_SUFFIX = ".tmp"


class DestinationError(Exception):
    """The destination URL is unusable (unknown scheme, missing s3fs, not a directory)."""


class Destination:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise DestinationError(f"archive destination {url!r}: {exc}") from None
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def url(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def write(self, path: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
        """Write ``data`` to ``path`` durably; ``before_commit`` runs when a local file is written but not yet
        renamed into place (a crash hook's "during the write" point)."""
        if not self.local:
            if before_commit is not None:
                before_commit()
            self.fs.pipe_file(path, data)
            return
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = path + TMP_SUFFIX
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def remove(self, *paths: str) -> None:
        """Remove each path and its ``.tmp`` sibling; a missing one is fine (a retried removal)."""
        for path in paths:
            for candidate in (path, path + TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # not there
                    self.fs.rm_file(candidate)


def open_url(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Destination, str]:
    """A full file URL (a manifest's) -> (a destination on its file system, the file's path)."""
    dest = Destination(url, storage_options)
    return dest, dest.root
