"""Publish a draft IR folder where the server loads it, atomically, and ask the server to reload.

Boundary: filesystem and one HTTP POST; knows nothing about training.

`publish(src, dest)` copies `src` into a hidden sibling of `dest` (`.<name>.incoming-<pid>`), flushes it to
disk, then swaps it with `dest` in one `renameat2(RENAME_EXCHANGE)` call (Linux); where that is not
available, it renames `dest` aside and the new folder into place (two renames: `dest` is briefly absent,
never half-written). A crash while copying leaves `dest` untouched; stale staging folders are removed by
the next publish.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import urllib.request
from pathlib import Path

log = logging.getLogger("training.publish")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        log.debug("renameat2 failed (errno %d); falling back to two renames", errno)
        return False
    return True


def _copy_file(src, dst):
    return shutil.copy2(src, dst)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish(src: str | Path, dest: str | Path) -> Path:
    src, dest = Path(src), Path(dest)
    if not (src / "openvino_model.xml").exists():
        raise FileNotFoundError(f"{src / 'openvino_model.xml'}: not an IR folder; refusing to publish it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.incoming-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = dest.parent / f".{dest.name}.incoming-{os.getpid()}"
    shutil.copytree(src, staging, copy_function=_copy_file)
    _fsync_tree(staging)
    if not dest.exists():
        staging.rename(dest)
    elif _exchange(staging, dest):
        shutil.rmtree(staging)  # it now holds the previous draft
    else:
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old)
    log.info("published %s -> %s", src, dest)
    return dest


def request_reload(server_url: str, draft_dir: str | Path, timeout: float = 120.0, api_key: str | None = None) -> dict:
    """POST {server_url}/admin/reload {"draft": path} (with the server's API key, if it has one); returns its JSON answer."""
    body = json.dumps({"draft": str(draft_dir)}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(server_url.rstrip("/") + "/admin/reload", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode() or "{}"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}
