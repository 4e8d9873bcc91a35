"""Downloading one public file: written atomically, kept only if its sha256 is the expected one, and bounded
in time (a socket timeout per read, and a deadline for the whole download, DNS included, so that a machine
without network answers in seconds instead of hanging).

``DLRMLAB_OFFLINE=1`` turns off downloads on first use (:func:`offline`): commands that want one of the
paper's files then say how to get it instead. The test suite sets it, so no test reaches the network; an
explicit ``dlrmlab data fetch`` still downloads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlrmlab.errors import DlrmlabError

OFFLINE_ENV = "DLRMLAB_OFFLINE"
#: Seconds one socket operation may wait, and the whole download of a few MB.
SOCKET_TIMEOUT_S = 10.0
DEADLINE_S = 60.0
#: What a failed download raises besides DlrmlabError (a wrong content): no network, refused, timed out, 404.
NETWORK_ERRORS = (urllib.error.URLError, OSError, TimeoutError, ConnectionError)

Opener = Callable[..., Any]  # urllib.request.urlopen's shape: opener(url, timeout=...) -> a readable context


def offline() -> bool:
    """True where ``$DLRMLAB_OFFLINE`` is set to anything but empty, ``0``, ``false`` or ``no``."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _copy(url: str, target: Path, sha256: str, opener: Opener, timeout: float, cancel: threading.Event) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                if cancel.is_set():
                    return
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha256:
            raise DlrmlabError(
                f"{url}: the download is not the expected file (sha256 {digest.hexdigest()[:12]}, expected "
                f"{sha256[:12]}); nothing was written"
            )
        if not cancel.is_set():
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(url: str, target: Path, sha256: str, *, opener: Opener | None = None,
             timeout: float = SOCKET_TIMEOUT_S, deadline: float = DEADLINE_S) -> None:  # fmt: skip
    """Write ``url`` to ``target`` (atomically, through a temporary file beside it) if its content's sha256 is
    ``sha256``. Raises DlrmlabError for a wrong content, one of :data:`NETWORK_ERRORS` when the download fails
    or does not end within ``deadline`` seconds (it then stops and leaves nothing behind). ``opener`` defaults
    to ``urllib.request.urlopen``, looked up at the call (tests replace it)."""
    opener = opener or urllib.request.urlopen
    cancel, failure = threading.Event(), []

    def work() -> None:
        try:
            _copy(url, target, sha256, opener, timeout, cancel)
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    worker = threading.Thread(target=work, name=f"download {target.name}", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        cancel.set()
        raise TimeoutError(f"no complete answer within {deadline:g} s")
    if failure:
        raise failure[0]
