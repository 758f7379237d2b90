"""Atomic file writes: every file the project writes (checkpoints, images, videos, exports,
configs, the prompt-embedding cache) goes to a temporary path and is renamed into place once
complete, so a killed run or a full disk never leaves a partial file under a finished name."""

import contextlib
import os
import shutil

TMP_DIR_PREFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str):
    """A temporary path to write ``path``'s contents to: the same name (writers that go by the
    extension still do) in a hidden ``.tmpPID`` folder beside it, renamed into place only once
    the writing finished. An interrupted write (a kill, a full disk) leaves the earlier file
    whole, and its partial file where no listing of the folder (a video's frames, a viewer)
    takes it for a finished one."""
    folder, name = os.path.split(path)
    tmp_dir = os.path.join(folder, f"{TMP_DIR_PREFIX}{os.getpid()}")
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        try:
            os.rmdir(tmp_dir)
        except OSError:
            pass


def remove_stale_temporaries(folder: str) -> int:
    """Delete the ``.tmpPID`` folders under ``folder`` whose process is gone (left by a killed
    run); returns how many were removed."""
    removed = 0
    for root, dirs, _ in os.walk(folder):
        for d in list(dirs):
            pid = d[len(TMP_DIR_PREFIX) :]
            if d.startswith(TMP_DIR_PREFIX) and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(root, d), ignore_errors=True)
                dirs.remove(d)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
