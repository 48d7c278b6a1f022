"""The infer-kserve client against a stand-in ingress that routes by Host, as Kourier does."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from income_bundle.kserve.client import main
from income_bundle.scenarios import SCENARIOS

HOST = "income-predictor.income-kserve.example.com"


@pytest.fixture
def ingress():
    seen: list[tuple[str, str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers["Host"], self.path, body))
            if self.headers["Host"] != HOST:
                self.send_response(404)
                self.end_headers()
                return
            rows = body["inputs"][0]["shape"][0]
            answer = {"model_name": "income", "outputs": [
                {"name": "predict", "datatype": "INT64", "shape": [rows, 1], "data": [1] * rows}]}  # fmt: skip
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_sends_the_three_scenarios_routed_by_host(ingress, training_report, capsys):
    url, seen = ingress
    assert main(["infer", "--url", url, "--host", HOST]) == 0
    assert [(host, path) for host, path, _ in seen] == [(HOST, "/v2/models/income/infer")] * 3
    assert all(body["inputs"][0]["shape"] == [20, 12] for _, _, body in seen)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(SCENARIOS)


def test_a_wrong_host_is_an_error_naming_it(ingress, training_report, capsys):
    url, _ = ingress
    assert (
        main(["infer", "--url", url, "--host", "other.example.com", "--scenario", "reference"]) == 1
    )
    err = capsys.readouterr().err
    assert "scenario reference" in err and "other.example.com" in err and "answered 404" in err


def test_no_ingress_says_how_to_reach_it(training_report, capsys):
    assert (
        main(["infer", "--url", "http://127.0.0.1:9", "--host", HOST, "--scenario", "reference"])
        == 1
    )
    assert "port-forward svc/kourier" in capsys.readouterr().err
