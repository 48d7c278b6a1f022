"""Per-call cost of the gateway's MLServer client, paired against other clients in one run.

A real uvicorn (httptools parser, uvloop: what MLServer runs) in a child process answers
`POST /v2/models/income/infer` with a fixed income-sized V2 answer and MLServer's headers, so
what differs between the clients is the client alone. Clients take turns block by block (the
order rotates each round), one call at a time, so load on the machine hits all of them alike;
the paired figure is the median over rounds of (client's block median - reference's block median).

    .venv/bin/python scripts/benchmark_upstream.py --calls 3000 --baseline-rev <git revision>

`--baseline-rev` loads `src/income_bundle/seldon/upstream.py` as it was at that revision (e.g.
the hand-written parser before the llhttp one) as a third client; aiohttp's client is always
measured, as the maintained alternative.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import uvicorn
import uvloop
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.seldon import upstream
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = ["ClientBenchmarkSettings", "main", "measure"]

PATH = "/v2/models/income/infer"
# Twenty rows of the twelve income features, as the scenarios send them, and MLServer's answer.
REQUEST = json.dumps(
    {
        "inputs": [
            {
                "name": "predict",
                "datatype": "FP32",
                "shape": [20, 12],
                "data": [[39, 7, 1, 1, 1, 1, 4, 1, 2174, 0, 40, 9]] * 20,
            }
        ]
    }
).encode()
ANSWER = json.dumps(
    {
        "model_name": "income",
        "id": "0c4c5f8e-2f7e-4c4e-9d0e-3c1f6f0b9a11",
        "parameters": {},
        "outputs": [
            {
                "name": "predict",
                "shape": [20, 1],
                "datatype": "INT64",
                "parameters": {"content_type": "np"},
                "data": [0, 1] * 10,
            }
        ],
    }
).encode()
HEADERS = {"content-type": "application/json"}

Call = Callable[[], Awaitable[bytes]]


async def _answer(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(ANSWER)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


def _serve(sock: socket.socket) -> None:
    config = uvicorn.Config(_answer, loop="uvloop", http="httptools", log_level="error",
                            access_log=False, lifespan="off")  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


def _module_at(revision: str) -> types.ModuleType:
    """upstream.py as it was at a git revision, loaded as its own module."""
    root = Path(__file__).resolve().parents[3]
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{revision}:src/income_bundle/seldon/upstream.py"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("upstream_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"upstream.py@{revision}", "exec"), module.__dict__)
    return module


async def measure(
    base_url: str, calls: int, block: int, baseline_revision: str | None
) -> dict[str, list[list[int]]]:
    """Per client, per round, the nanoseconds of each call."""
    clients: dict[str, Call] = {}
    closers = []
    current = upstream.UpstreamClient(base_url)
    closers.append(current.close)

    async def call_current() -> bytes:
        return (await current.request("POST", PATH, REQUEST, HEADERS)).body

    clients["llhttp (current)"] = call_current
    if baseline_revision:
        baseline = _module_at(baseline_revision).UpstreamClient(base_url)  # type: ignore[attr-defined]
        closers.append(baseline.close)

        async def call_baseline() -> bytes:
            return (await baseline.request("POST", PATH, REQUEST, HEADERS)).body

        clients[f"hand-written ({baseline_revision})"] = call_baseline
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    closers.append(session.close)

    async def call_aiohttp() -> bytes:
        async with session.post(base_url + PATH, data=REQUEST, headers=HEADERS) as response:
            return await response.read()

    clients["aiohttp"] = call_aiohttp
    for call in clients.values():  # warm: connections open, code paths hot
        for _ in range(50):
            assert await call() == ANSWER
    names = list(clients)
    timings: dict[str, list[list[int]]] = {name: [] for name in names}
    for round_number in range(max(1, calls // block)):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            call, spent = clients[name], []
            for _ in range(block):
                started = time.perf_counter_ns()
                await call()
                spent.append(time.perf_counter_ns() - started)
            timings[name].append(spent)
    for close in closers:
        await close()
    return timings


def _report(timings: dict[str, list[list[int]]]) -> str:
    """p50/p90 per client and, paired round by round, what the current client costs more."""
    names = list(timings)
    current = [statistics.median(block) for block in timings[names[0]]]
    header = f"{'client':<34}{'calls':>7}{'p50 us':>9}{'p90 us':>9}{'current - this, paired':>26}"
    lines = [header]
    for name in names:
        flat = sorted(t for block in timings[name] for t in block)
        medians = [statistics.median(block) for block in timings[name]]
        paired = statistics.median(c - m for c, m in zip(current, medians, strict=True))
        lines.append(
            f"{name:<34}{len(flat):>7}{flat[len(flat) // 2] / 1e3:>9.1f}"
            f"{flat[int(len(flat) * 0.9)] / 1e3:>9.1f}{paired / 1e3:>+23.1f} us"
        )
    return "\n".join(lines)


class ClientBenchmarkSettings(CommandSettings):
    """Per-call cost of the gateway's MLServer client, paired against other clients."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BENCHMARK_CLIENT_")

    calls: int = Field(3000, ge=1, description="calls per client")
    block: int = Field(50, ge=1, description="calls per client per turn")
    baseline_rev: str | None = Field(None, description="git revision of upstream.py to measure too")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(ClientBenchmarkSettings, argv, prog="scripts/benchmark_upstream.py")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # listening before the server starts: the first connect just waits
    port = sock.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # the server, in its own process so it does not share the clients' core time
        try:
            _serve(sock)
        finally:
            os._exit(0)
    try:
        timings = uvloop.run(
            measure(
                f"http://127.0.0.1:{port}", settings.calls, settings.block, settings.baseline_rev
            )
        )
    finally:
        os.kill(pid, 15)
        os.waitpid(pid, 0)
        sock.close()
    print(_report(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
