"""A background server process with its log in a file: start, wait until ready, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from income_bundle.errors import BundleError

__all__ = ["ServerProcess", "http_ok"]


def http_ok(url: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ServerProcess:
    """One command in its own session (so it and its children stop together), logging to a file."""

    def __init__(self, name: str, command: list[str], log_path: Path, **popen_kwargs) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self._process: subprocess.Popen | None = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen_kwargs,
            )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exited(self) -> bool:
        """Whether the process was started and has ended on its own (not by `stop`)."""
        return self._process is not None and self._process.poll() is not None

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
        if process and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
