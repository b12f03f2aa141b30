"""Interrupted writes leave nothing: a real `vqdoctor` process killed with SIGTERM/SIGINT in the
middle of a write removes its temporary output and exits 143/130; the destination keeps its old
bytes. A SIGKILL's leftovers carry the `.vqdoctor-tmp-` prefix, the next run reports them and
`vqdoctor clean DIR` removes them. Every output goes through the one atomic writer."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stats_helpers import make_setup
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.io.atomic import PAUSE_ENV, TMP_PREFIX, atomic_path, atomic_write_bytes

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str], ready: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, PAUSE_ENV: str(ready), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "vqdoctor", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_ready(proc: subprocess.Popen, ready: Path) -> Path:
    deadline = time.monotonic() + 120
    while not ready.exists() or not ready.read_text():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        assert time.monotonic() < deadline, "the write never started"
        time.sleep(0.05)
    tmp = Path(ready.read_text())
    assert tmp.name.startswith(TMP_PREFIX) and tmp.exists()
    return tmp


def _commands(tmp_path: Path) -> dict[str, tuple[list[str], Path]]:
    ckpt, z, y = make_setup(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(ckpt.read_bytes())
    (hf / "config.json").write_text("{}")
    return {
        "fix revive folder": (["fix", "revive", str(hf), "--latents", str(z), "--out", str(out / "new")], out / "new"),
        "fix revive": (["fix", "revive", str(ckpt), "--latents", str(z), "--out", str(out / "new.safetensors")],
                       out / "new.safetensors"),
        "inspect --json": (["inspect", str(ckpt), "--latents", str(z), "--json", str(out / "r.json")], out / "r.json"),
        "inspect --save-stats": (["inspect", str(ckpt), "--latents", str(z), "--shard", "0/2", "--save-stats",
                                  str(out / "s.stats")], out / "s.stats"),
    }


@pytest.mark.parametrize(("command", "sig", "code"), [
    ("fix revive", signal.SIGTERM, 143), ("inspect --json", signal.SIGTERM, 143),
    ("inspect --save-stats", signal.SIGTERM, 143), ("fix revive", signal.SIGINT, 130),
    ("fix revive folder", signal.SIGTERM, 143),
])
def test_signal_mid_write_leaves_nothing(tmp_path, command, sig, code):
    args, dest = _commands(tmp_path)[command]
    if command.endswith("folder"):
        dest.mkdir()
        (dest / "old.txt").write_bytes(b"previous output")
    else:
        dest.write_bytes(b"previous output")
    ready = tmp_path / "ready"
    proc = _start(args, ready, tmp_path)
    try:
        tmp = _wait_ready(proc, ready)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err.decode()
    assert not tmp.exists() and [p.name for p in dest.parent.iterdir()] == [dest.name]
    old = dest / "old.txt" if dest.is_dir() else dest
    assert old.read_bytes() == b"previous output"
    assert b"Traceback" not in err


def test_sigkill_leftovers_are_reported_then_cleaned(tmp_path):
    args, dest = _commands(tmp_path)["fix revive"]
    ready = tmp_path / "ready"
    proc = _start(args, ready, tmp_path)
    try:
        tmp = _wait_ready(proc, ready)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert tmp.exists() and not dest.exists()  # SIGKILL cannot be caught: the prefix tells what it is
    res = runner.invoke(app, ["fix", *args[1:]])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "leftover temporary output" in text and f"vqdoctor clean {dest.parent}" in text
    (dest.parent / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["clean", str(dest.parent), "--dry-run"])
    assert res.exit_code == 0 and tmp.name in res.output and tmp.exists()
    res = runner.invoke(app, ["clean", str(dest.parent)])
    assert res.exit_code == 0 and not tmp.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["keep.txt", "new.safetensors"]


def test_clean_removes_links_not_their_targets(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / f"{TMP_PREFIX}x").symlink_to(target)
    (tmp_path / f"{TMP_PREFIX}dir").symlink_to(tmp_path, target_is_directory=True)
    res = runner.invoke(app, ["clean", str(tmp_path)])
    assert res.exit_code == 0 and target.read_text() == "keep"
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())


def test_handlers_are_installed_only_while_writing(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic_path(tmp_path / "a.bin") as tmp:
        assert signal.getsignal(signal.SIGTERM) is not before
        with atomic_path(tmp_path / "b.bin") as inner:  # nested writes share the handlers
            inner.write_bytes(b"b")
        assert signal.getsignal(signal.SIGTERM) is not before
        tmp.write_bytes(b"a")
    assert signal.getsignal(signal.SIGTERM) is before
    assert (tmp_path / "a.bin").read_bytes() == b"a" and (tmp_path / "b.bin").read_bytes() == b"b"


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.json", b"{}")
        with atomic_path(tmp_path / "folder", folder=True) as d:
            (d / "x").write_bytes(b"")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_a_failed_write_is_one_paragraph(tmp_path):
    ckpt, z, _ = make_setup(tmp_path)
    long_name = tmp_path / ("x" * 300 + ".json")
    res = runner.invoke(app, ["inspect", str(ckpt), "--json", str(long_name)])
    # refused when the command starts (cli/paths.py), before any analysis, as one paragraph
    assert res.exit_code == 2 and "Traceback" not in res.output and "over the 255-byte limit" in res.output
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())


def test_one_atomic_writer_for_every_output():
    """No module writes an output by its own temp-file dance: only vqdoctor/io/atomic.py."""
    offenders = []
    for path in (ROOT / "vqdoctor").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "atomic.py" and any(s in text for s in ("mkstemp(", "mkdtemp(", "NamedTemporaryFile(")):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
