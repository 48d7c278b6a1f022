"""`income-bundle serve` killed with SIGKILL takes MLServer and its workers with it, leaves no
temporary folder behind, and starts again at once on the same ports and state dir; bad settings
are one line before anything starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from income_bundle.process import http_ok
from income_bundle.server import free_port

CLI = str(Path(sys.executable).with_name("income-bundle"))


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (int(c) for c in (task / "children").read_text().split()):
            found += [child, *_descendants(child)]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _serve(ports: dict[str, int], state_dir: Path) -> subprocess.Popen:
    args = [f"--{flag}={port}" for flag, port in ports.items()]
    return subprocess.Popen(
        [CLI, "serve", *args, f"--state-dir={state_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # a kill of this test's group must not reach it by accident
    )  # fmt: skip


def _wait_ready(process: subprocess.Popen, http_port: int, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        if http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready"):
            return
        time.sleep(0.5)
    pytest.fail(f"serve was not ready within {timeout_s} s")


def _temp_dirs(pid: int) -> list[Path]:
    root = Path(tempfile.gettempdir())
    return [*root.glob(f"income-seldon-{pid}-*"), *root.glob(f"income-mlserver-{pid}-*")]


def test_sigkill_of_serve_kills_mlserver_and_a_restart_comes_up(training_report, tmp_path):
    ports = {
        name: free_port()
        for name in ("http-port", "grpc-port", "mlserver-metrics-port", "monitor-port")
    }
    first = _serve(ports, tmp_path / "state")
    try:
        _wait_ready(first, ports["http-port"])
        old = _descendants(first.pid)
        assert len(old) >= 2, "MLServer and its workers run under serve"
        assert _temp_dirs(first.pid)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # serve alone, as `kill -9 <pid>` would
        first.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in old):
        time.sleep(0.2)
    survivors = [pid for pid in old if _alive(pid)]
    for pid in survivors:  # leave no stray MLServer behind, even when this fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "MLServer (or one of its workers) outlived serve"

    second = _serve(ports, tmp_path / "state")
    try:
        _wait_ready(second, ports["http-port"])
        assert http_ok(f"http://127.0.0.1:{ports['monitor-port']}/ready")
        assert not _temp_dirs(first.pid), "the killed run's temporary folders were left behind"
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)


@pytest.mark.parametrize("under", ["file", "file/state"])
def test_a_state_dir_that_cannot_be_one_is_one_line_before_anything_starts(tmp_path, under):
    (tmp_path / "file").write_text("not a folder")
    started = time.monotonic()
    done = subprocess.run(
        [CLI, "serve", f"--state-dir={tmp_path / under}", "--http-port=0", "--grpc-port=0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert time.monotonic() - started < 10
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--state-dir" in lines[0] and "file" in lines[0], done.stderr
    assert "starting MLServer" not in done.stdout
