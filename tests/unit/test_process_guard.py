"""A ServerProcess, and everything its command starts, dies with the process that started it,
even when that process is killed with SIGKILL and can clean up nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from income_bundle.process import ServerProcess

STARTER = """
import sys, time
from pathlib import Path
from income_bundle.process import ServerProcess
server = ServerProcess("sleepers", ["sh", "-c", "sleep 300 & sleep 300"], Path(sys.argv[1]))
print(server.pid, flush=True)
time.sleep(300)
"""


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (int(c) for c in (task / "children").read_text().split()):
            found += [child, *_descendants(child)]
    return found


def _sleeps(pids: list[int]) -> int:
    return sum(Path(f"/proc/{pid}/comm").read_text().strip() == "sleep" for pid in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_command_and_its_children_die_with_a_sigkilled_starter(tmp_path):
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path / "sleepers.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    group = int(starter.stdout.readline())
    deadline = time.monotonic() + 10
    started: list[int] = []
    while time.monotonic() < deadline and _sleeps(started) < 2:
        started = [group, *_descendants(group)]
        time.sleep(0.05)
    assert _sleeps(started) == 2, started
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in started):
        time.sleep(0.05)
    survivors = [pid for pid in started if _alive(pid)]
    if survivors:  # leave nothing running, even when this fails
        os.killpg(group, signal.SIGKILL)
    assert not survivors, "the server outlived the process that started it"


def test_stop_ends_the_command_and_reports_its_exit(tmp_path):
    server = ServerProcess("sleeper", ["sleep", "300"], tmp_path / "sleeper.log")
    group = server.pid
    assert group is not None
    server.stop(timeout_s=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(group):
        time.sleep(0.05)
    assert not _alive(group)
    failing = ServerProcess("failing", ["sh", "-c", "exit 3"], tmp_path / "failing.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not failing.exited():
        time.sleep(0.05)
    assert failing._process is not None and failing._process.returncode == 3


def test_a_server_started_from_a_thread_outlives_the_thread(tmp_path):
    import threading

    started: list[ServerProcess] = []
    starter = threading.Thread(
        target=lambda: started.append(
            ServerProcess("sleeper", ["sleep", "300"], tmp_path / "sleeper.log")
        )
    )
    starter.start()
    starter.join()
    (server,) = started
    try:
        # Still running well after its thread ended (a parent-death signal would have fired).
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            assert not server.exited()
            time.sleep(0.05)
    finally:
        server.stop(timeout_s=10)
