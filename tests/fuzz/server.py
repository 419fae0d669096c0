"""A fork server: cases run in a forked child, so a crash or a hang is recorded with its case, not fatal.

The parent forks a worker that reads pickled ``(target, case)`` requests from a pipe, runs each with
:func:`tests.fuzz.targets.execute` and answers with the pickled :class:`Verdict`. When the worker
dies (a signal such as SIGSEGV, or a sanitizer's report and exit) the parent records the case it
was running as a crash, with the exit status and the tail of the worker's stderr (where ASan and
UBSan write), and forks a fresh worker; when it does not answer within ``timeout_s`` the parent
kills it and records a hang. One worker runs many cases (a fork per case costs ~10 ms, ~35 ms under
ASan); a case that corrupts memory without crashing is what the sanitizers are there to catch the
moment it happens.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import select
import signal
import struct
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["ForkServer", "Verdict"]

_HEADER = struct.Struct("<Q")


@dataclass(frozen=True)
class Verdict:
    """What one case did. ``kind``: "ok" (both backends agree, or both refuse alike), "refused" (every
    backend refused it cleanly), "disagree" (different results or refusals), "unclear" (an exception
    other than TypeError/ValueError/OverflowError, or a raw kernel status in a message), "crash", "hang"."""

    kind: str
    detail: str = ""


def _write(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> Optional[bytes]:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> Optional[bytes]:
    head = _read_exactly(fd, _HEADER.size)
    if head is None:
        return None
    return _read_exactly(fd, _HEADER.unpack(head)[0])


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    return f"exited with status {os.WEXITSTATUS(status)}"


class ForkServer:
    """Runs ``execute(target, case) -> Verdict`` in a forked worker; see the module doc."""

    def __init__(self, execute: Callable[[str, Any], Verdict], timeout_s: float = 30.0) -> None:
        self.execute = execute
        self.timeout_s = timeout_s
        self.pid = 0
        self.restarts = 0
        self._to_child = self._from_child = -1
        self._stderr = tempfile.TemporaryFile()

    def __enter__(self) -> "ForkServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        self._stderr.seek(0)
        self._stderr.truncate()
        pid = os.fork()
        if pid == 0:  # the worker: answer requests until the pipe closes
            os.close(down_w)
            os.close(up_r)
            os.dup2(self._stderr.fileno(), 2)
            faulthandler.enable(file=sys.stderr)  # a fault's Python traceback joins the report, not the runner's stderr
            code = 0
            try:
                while (request := _read(down_r)) is not None:
                    target, case = pickle.loads(request)
                    _write(up_w, pickle.dumps(self.execute(target, case)))
            except BaseException:  # noqa: BLE001 - a harness fault: report it by the exit status
                code = 3
            os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self.pid, self._to_child, self._from_child = pid, down_w, up_r

    def _stop(self, kill: bool) -> int:
        if kill:
            os.kill(self.pid, signal.SIGKILL)
        os.close(self._to_child)
        os.close(self._from_child)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        self.restarts += 1
        return status

    def _stderr_report(self, limit: int = 4000) -> str:
        """The worker's stderr from the sanitizer's first line (``ERROR: AddressSanitizer``, ``runtime error``,
        a Python fault report), else its end; at most ``limit`` characters."""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        starts = [i for i in (text.find("ERROR: AddressSanitizer"), text.find("runtime error:"),
                              text.find("Fatal Python error")) if i >= 0]  # fmt: skip
        start = max(0, text.rfind("\n", 0, min(starts)) + 1) if starts else max(0, len(text) - limit)
        return text[start : start + limit]

    def run(self, target: str, case: Any) -> Verdict:
        """The verdict of one case; a dead or silent worker gives "crash" or "hang" and is replaced."""
        if not self.pid:
            self._start()
        try:
            _write(self._to_child, pickle.dumps((target, case)))
        except BrokenPipeError:
            pass  # the worker died on a previous case's aftermath: read() below sees EOF
        ready, _, _ = select.select([self._from_child], [], [], self.timeout_s)
        if not ready:
            self._stop(kill=True)
            return Verdict("hang", f"no answer within {self.timeout_s:g} s")
        answer = _read(self._from_child)
        if answer is None:
            tail = self._stderr_report()
            status = self._stop(kill=False)
            return Verdict("crash", f"worker {_describe_exit(status)}\n{tail}")
        verdict = pickle.loads(answer)
        assert isinstance(verdict, Verdict)
        return verdict

    def close(self) -> None:
        if self.pid:
            self._stop(kill=False)
            self.restarts -= 1
        self._stderr.close()
