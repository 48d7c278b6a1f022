"""A background server process with its log in a file: start, wait until ready, stop.

The command runs under a guard (`python -m income_bundle.process --lifeline FD -- COMMAND`)
that leads a process group of its own, holding the command and everything it starts (MLServer's
inference workers too). The guard reads the end of a pipe whose other end only the starting
process holds; the kernel closes that end when the process dies, however it dies (SIGKILL too),
and the guard then SIGKILLs the whole group: a server never outlives the process that started
it. (Linux's parent-death signal, `prctl(PR_SET_PDEATHSIG)`, would fire when the *thread* that
started the server ends, which kills servers that tests and tools start from worker threads.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from income_bundle.errors import BundleError

__all__ = ["ServerProcess", "http_ok", "run_temp_dir"]


def http_ok(url: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run_temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder named after this process (`<prefix><pid>-...`), once the folders of
    the same prefix left by processes that no longer run (killed before they could clean up)
    are removed."""
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        owner = stale.name[len(prefix) :].split("-", 1)[0]
        if owner.isdigit() and not _running(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: another user's process, running
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class ServerProcess:
    """One command under a guard in its own session (so it and its children stop together, and
    die with this process), logging to a file."""

    def __init__(self, name: str, command: list[str], log_path: Path, **popen_kwargs) -> None:
        self.name = name
        self.log_path = log_path
        # The guard's lifeline: its write end stays in this process alone (not inherited), open
        # until `stop`, or until this process dies.
        lifeline, self._lifeline = os.pipe()
        guarded = [sys.executable, "-m", "income_bundle.process", "--lifeline", str(lifeline)]
        with log_path.open("ab") as log:
            self._process: subprocess.Popen | None = subprocess.Popen(
                [*guarded, "--", *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(lifeline,),
                **popen_kwargs,
            )
        os.close(lifeline)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exited(self) -> bool:
        """Whether the process was started and has ended on its own (not by `stop`)."""
        return self._process is not None and self._process.poll() is not None

    def wait(self) -> int:
        """Wait until the command ends on its own; its exit status. What it left running in its
        group is killed then."""
        if self._process is None:
            raise BundleError(f"{self.name} is not running")
        returncode = self._process.wait()
        self.stop()
        return returncode

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until(
        self, ready: Callable[[], bool], timeout_s: float, error: type[BundleError]
    ) -> None:
        """Poll `ready` until it holds; raise `error` with the log's tail if the process dies or
        time runs out (and stop it then)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process and self._process.poll() is not None:
                raise error(
                    f"{self.name} exited with code {self._process.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise error(f"{self.name} was not ready within {timeout_s:.0f} s; log:\n{tail}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it if it has not gone within `timeout_s`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Whatever the command left behind in its group (a worker that missed the shutdown).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        os.close(self._lifeline)


def guard(lifeline: int, command: Sequence[str]) -> int:
    """Run `command` in this process's group until it exits (its exit status is returned); when
    `lifeline` reads end-of-file (the starting process died), SIGKILL the group, this guard too."""

    def watch() -> None:
        while os.read(lifeline, 1):  # nothing is ever written: this returns b"" at the end
            pass
        os.killpg(0, signal.SIGKILL)

    # SIGTERM and SIGINT reach the whole group (ServerProcess.stop): the command shuts itself
    # down and the guard waits for it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen(command, preexec_fn=_default_stop_signals)
    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    returncode = child.wait()
    return 128 - returncode if returncode < 0 else returncode


def _default_stop_signals() -> None:
    """The command handles SIGTERM and SIGINT itself, not as the guard (which ignores them)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m income_bundle.process --lifeline FD -- COMMAND...` (see the module's
    docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[0] != "--lifeline" or args[2] != "--" or not args[1].isdigit():
        print("usage: python -m income_bundle.process --lifeline FD -- COMMAND...", file=sys.stderr)
        return 2
    return guard(int(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main())
