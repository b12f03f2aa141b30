"""Up-front checks of the paths a command will write, before any analysis runs.

A CI job that spends an hour on 10^8 vectors should not then fail on ``--out`` in a read-only
folder. Each output flag is checked when the command starts: the name fits the file system
(at most 255 bytes per component), the path is not inside ``/proc`` or ``/sys``, and the folder it
goes into, or its nearest existing ancestor, is a folder and accepts a new file (tried with an
empty temporary file, removed at once: this also catches read-only mounts and immutable folders,
which permission bits do not show). When every flag passes, the missing folders are created
(``--json reports/r.json`` makes ``reports/``; ``--plots DIR`` makes ``DIR``), so the writers at the
end of the run, all atomic (:mod:`vqdoctor.io.atomic`), only ever write into existing folders."""

from __future__ import annotations

import os
from pathlib import Path

from vqdoctor.errors import UsageError
from vqdoctor.io.atomic import temp_sibling

NAME_MAX = 255
PSEUDO_FS = ("/proc", "/sys")


def check_output(flag: str, path: Path | str | None, *, kind: str = "file", creates_folders: bool = False) -> None:
    """Raise :class:`UsageError` (one paragraph, exit 2) where ``path`` cannot be written.
    ``kind``: ``"file"``, ``"folder"`` (``--plots``: files go inside it) or ``"any"`` (``--out``,
    which is a folder for a model folder). ``creates_folders``: the writer makes missing folders."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    long = next((part for part in path.parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        raise UsageError(f"{flag} {str(path)[:80]}...: the name {long[:40]}... is {len(os.fsencode(long))} bytes long, "
                         f"over the {NAME_MAX}-byte limit of file names.", "Choose a shorter name.")
    resolved = Path(os.path.abspath(path))
    if any(resolved == Path(p) or Path(p) in resolved.parents for p in PSEUDO_FS):
        raise UsageError(f"{flag} {path} is inside /{resolved.parts[1]}, a system "
                         "pseudo-file system, not a place for files.", "Write to a normal folder.")
    if kind == "file" and path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; a file name is needed.", f"Pass {flag} FOLDER/NAME.")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; a folder is needed.", f"Pass {flag} with a folder path.")
    folder = resolved if (kind == "folder" or path.is_dir()) else resolved.parent
    if creates_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.exists():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist.",
                         f"Create it first (mkdir -p {folder}) or choose another path.")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is not a folder.", "Choose a path inside a folder.")
    probe = temp_sibling(folder / "probe")  # a leftover name `vqdoctor clean` knows, were we killed here
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create files in {folder} ({exc.strerror or exc}).",
                         "Choose a writable folder, or fix its permissions.") from None
    os.close(fd)
    os.unlink(probe)


# what each output flag names: a file, a folder the files go into, or either (--out: a model folder)
OUTPUT_FLAGS: dict[str, str] = {
    "--out": "any", "--json": "file", "--html": "file", "--junit": "file", "--plots": "folder",
    "--save-stats": "file", "--csv": "file", "--plot": "file", "--write-baseline": "file",
}


def make_folders(flag: str, path: Path | str | None, *, kind: str = "file") -> None:
    """Create the folder ``path`` goes into (for ``kind="folder"``: ``path`` itself) where missing."""
    if path is None or str(path) == "-":
        return
    folder = Path(path) if kind == "folder" else Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create the folder {folder} ({exc.strerror or exc}).",
                         "Choose a writable location, or create the folder first.") from None


def check_outputs(*flags: tuple[str, Path | str | None]) -> None:
    """:func:`check_output` over ``(flag, path)`` pairs, before the analysis starts; when all pass,
    the missing folders they go into are created (nothing is created when one is refused)."""
    for flag, path in flags:
        check_output(flag, path, kind=OUTPUT_FLAGS[flag], creates_folders=True)
    for flag, path in flags:
        make_folders(flag, path, kind=OUTPUT_FLAGS[flag])
