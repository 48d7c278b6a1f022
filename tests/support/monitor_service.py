"""The monitor's HTTP app served for tests: a real uvicorn in a thread on a loopback port, and
the classifier facts the tests' pipelines use."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import uvicorn

from income_bundle.monitoring.service import ClassifierInfo, Monitor, build_app

TOKEN = "test-feedback-token"
FEATURES = [f"f{i}" for i in range(12)]
INFO = ClassifierInfo(["<=50K", ">50K"], [0.75, 0.25], FEATURES, {1: [f"c{i}" for i in range(10)]})


class Served:
    """uvicorn serving the monitor's app in a thread, on a port of its own."""

    def __init__(self, monitor: Monitor, token: str = TOKEN, **limits):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.token = token
        app = build_app(monitor, token, **limits)
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]})
        self.thread.start()
        started = threading.Event()
        while not self.server.started and self.thread.is_alive():
            started.wait(0.05)

    def call(
        self, method: str, path: str, body: object = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        """One request; it carries the feedback token unless `headers` say otherwise."""
        data = (
            body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        )
        headers = {"Authorization": f"Bearer {self.token}"} if headers is None else headers
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()
