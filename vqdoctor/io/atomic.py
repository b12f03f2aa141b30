"""The one atomic writer behind every output (checkpoints, model folders, statistics, JSON,
HTML, JUnit, plots): write to a temporary sibling, then ``os.replace``.

- Temporary names start with :data:`TMP_PREFIX` (``.vqdoctor-tmp-``), so leftovers are
  recognisable: a run that finds some next to its output (after a SIGKILL or a power cut) says
  so on stderr, and ``vqdoctor clean DIR`` removes them.
- On any exception the temporary file or folder is removed and the destination is untouched.
- While a write is in progress (and only then, and only in the main thread) SIGTERM and SIGINT
  handlers remove the temporary outputs and exit with the conventional code 128 + signal
  (143, 130); the previous handlers are restored when the last write ends.
- Files get the usual mode (``0o666 & ~umask``, or the mode of the file they replace); folders
  are created with ``mkdir`` under the umask (not 0700).
- An ``OSError`` (missing or read-only folder, full disk, name too long) is a
  :class:`~vqdoctor.errors.UsageError` naming the path.

Test hook: with ``VQDOCTOR_TEST_PAUSE_WRITE=FILE`` set, a write that has produced its temporary
output writes the temporary path into FILE and waits (up to 60 s) before the rename, so a test
can interrupt it at a known point.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from vqdoctor.errors import UsageError

TMP_PREFIX = ".vqdoctor-tmp-"
PAUSE_ENV = "VQDOCTOR_TEST_PAUSE_WRITE"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_cleanups: list[Callable[[], None]] = []  # undo actions of the writes in progress, in order
_previous: dict[int, Any] = {}  # signal -> handler before ours (installed while _cleanups is non-empty)


def temp_sibling(out: Path, *, tag: str = "") -> Path:
    """A fresh temporary path beside ``out`` (its name shortened so the path stays valid)."""
    return out.parent / f"{TMP_PREFIX}{out.name[:80]}{tag}.{secrets.token_hex(4)}"


def leftovers(folder: Path) -> list[Path]:
    """Temporary outputs of interrupted vqdoctor writes in ``folder``."""
    try:
        return sorted(p for p in Path(folder).iterdir() if p.name.startswith(TMP_PREFIX))
    except OSError:
        return []


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the leftovers in ``folder`` (links themselves, never their targets); return them."""
    removed = []
    for p in leftovers(folder):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


_noted: set[Path] = set()  # folders already reported in this process (once each)


def _note_leftovers(folder: Path) -> None:
    key = Path(os.path.abspath(folder))
    if key in _noted:
        return
    found = leftovers(folder)
    if found:
        _noted.add(key)
        print(f"Note: {folder} holds {len(found)} leftover temporary output(s) of an interrupted vqdoctor "
              f"write (e.g. {found[0].name}); remove them with: vqdoctor clean {folder}", file=sys.stderr)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for undo in reversed(list(_cleanups)):
        undo()
    _cleanups.clear()
    _restore_handlers()
    raise SystemExit(128 + signum)


def _restore_handlers() -> None:
    for sig, handler in _previous.items():
        signal.signal(sig, handler)
    _previous.clear()


@contextmanager
def _guarded(undo: Callable[[], None]) -> Iterator[None]:
    """Run ``undo`` if SIGTERM/SIGINT arrives inside the block (handlers in the main thread only)."""
    main = threading.current_thread() is threading.main_thread()
    if main and not _previous:
        for sig in _SIGNALS:
            _previous[sig] = signal.getsignal(sig)
            signal.signal(sig, _on_signal)
    _cleanups.append(undo)
    try:
        yield
    finally:
        if undo in _cleanups:
            _cleanups.remove(undo)
        if main and not _cleanups:
            _restore_handlers()


def removed_on_signal(path: Path) -> AbstractContextManager[None]:
    """Inside the block, SIGTERM/SIGINT remove ``path`` (a temporary output made by a caller,
    e.g. a fix verified before it is moved into place) before the process exits."""
    return _guarded(lambda: _remove(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(out: Path, err: OSError) -> UsageError:
    return UsageError(f"Cannot write {out}: {err.strerror or err}.",
                      "Check that the folder exists and is writable, the name is not too long and the disk has space.")


def _pause_for_tests(tmp: Path) -> None:
    ready = os.environ.get(PAUSE_ENV)
    if not ready:
        return
    Path(ready).write_text(str(tmp), encoding="utf-8")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def atomic_path(out: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path (an empty file, or with ``folder`` an empty folder) beside ``out``;
    when the block succeeds it becomes ``out`` in one ``os.replace`` (an existing folder is moved
    aside first and removed after). On an exception or SIGTERM/SIGINT nothing is left."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    _note_leftovers(parent)
    tmp = temp_sibling(out)
    try:
        if folder:
            tmp.mkdir()
        else:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        raise _cannot_write(out, err) from None
    old: list[Path] = []

    def undo() -> None:
        _remove(tmp)
        if old and old[0].exists():
            if out.exists():
                _remove(old[0])  # the new output is in place: the old one was on its way out
            else:
                os.replace(old[0], out)

    with _guarded(undo):
        try:
            yield tmp
            _pause_for_tests(tmp)
            if folder:
                if out.exists():
                    aside = temp_sibling(out, tag=".old")
                    os.replace(out, aside)
                    old.append(aside)
                os.replace(tmp, out)
            else:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                mode = (out.stat().st_mode & 0o777) if out.exists() else (0o666 & ~_umask())
                os.chmod(tmp, mode)
                os.replace(tmp, out)
        except OSError as err:
            undo()
            raise _cannot_write(out, err) from None
        except BaseException:
            undo()
            raise
    if old:
        _remove(old[0])


def atomic_write_bytes(out: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``out`` atomically; return ``out``."""
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return out


__all__ = ["PAUSE_ENV", "TMP_PREFIX", "atomic_path", "atomic_write_bytes", "leftovers", "remove_leftovers",
           "temp_sibling"]
