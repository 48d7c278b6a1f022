"""In-process stand-ins for the fast lane: the gateway's fronts and engine are real, MLServer is
not. `StubForwarder` (named as such) answers as MLServer would for the shipped models' declared
outputs, without a process; `asgi_call` drives the REST front's ASGI app without a socket."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import orjson

from income_bundle.errors import ServingError
from income_bundle.runtime.contract import ModelContract
from income_bundle.seldon.bundle import load_bundle
from income_bundle.seldon.gateway import Gateway
from income_bundle.v2.tensors import Tensor
from tests.support.paths import ROOT


@functools.cache
def shipped_settings() -> dict[str, dict[str, Any]]:
    """model-settings.json of every shipped Model, found through its storageUri."""
    settings = {}
    for name, model in load_bundle(ROOT / "seldon-examples", ROOT).models.items():
        folder = model.local_folder(ROOT)
        if folder is not None and (folder / "model-settings.json").is_file():
            settings[name] = json.loads((folder / "model-settings.json").read_text())
    return settings


def declared(model: str) -> dict[str, Any]:
    return shipped_settings()[model]


class StubForwarder:
    """Stand-in for MLServerForwarder: answers each declared output with zeros of the declared
    datatype (rows from the request), records every call, and can be told to fail."""

    def __init__(self) -> None:
        self.settings = shipped_settings()
        self.calls: list[tuple[str, Any]] = []
        self.fail_with: BaseException | None = None
        self.ready_models: set[str] | None = None  # None: every model is ready
        self.gate: asyncio.Event | None = None  # when set, calls wait for it

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _outputs(self, model: str, rows: int, wanted: list[str] | None) -> list[dict[str, Any]]:
        outputs = []
        for item in self.settings[model].get("outputs", []):
            if wanted and item["name"] not in wanted:
                continue
            shape = [rows if d == -1 else d for d in item["shape"]]
            size = 1
            for d in shape:
                size *= d
            value = "" if item["datatype"] == "BYTES" else 0
            outputs.append({**item, "shape": shape, "data": [value] * size})
        return outputs

    async def _answer(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((model, request))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        rows = request["inputs"][0]["shape"][0] if request["inputs"][0]["shape"] else 1
        wanted = [o["name"] for o in request.get("outputs", [])] or None
        answer = {"model_name": model, "outputs": self._outputs(model, rows, wanted)}
        if "id" in request:
            answer["id"] = request["id"]
        return answer

    async def infer(self, model: str, tensors: list[Tensor], extra: dict | None = None):
        request = {"inputs": [{"shape": t.shape} for t in tensors], **(extra or {})}
        answer = await self._answer(model, request)
        # Its outputs are flat already: built as tensors directly, so that the stand-in's own
        # work on the event loop stays small beside the gateway's (a real MLServer's is apart).
        return [Tensor(o["name"], o["datatype"], o["shape"], o["data"]) for o in answer["outputs"]]

    async def infer_bytes(self, model: str, body: bytes) -> bytes:
        return orjson.dumps(await self._answer(model, orjson.loads(body)))

    async def ready(self, model: str | None = None) -> bool:
        return self.ready_models is None or model is None or model in self.ready_models

    async def metadata(self, model: str) -> tuple[int, Any]:
        settings = self.settings[model]
        return 200, {
            "name": model,
            "platform": settings.get("implementation", ""),
            "inputs": settings.get("inputs", []),
            "outputs": settings.get("outputs", []),
        }


def stub_gateway(forwarder: StubForwarder | None = None, pipelines_dir: Path | None = None):
    """A real Gateway over the shipped manifests (and the tests' pipelines) and a StubForwarder;
    contracts from the declared inputs (no trained artifacts needed)."""
    bundle = load_bundle(ROOT / "seldon-examples", ROOT)
    if pipelines_dir is not None:
        extra = load_bundle(pipelines_dir, ROOT)
        bundle.pipelines.update(extra.pipelines)
    settings = shipped_settings()
    contracts = {
        name: ModelContract(
            name,
            settings[name].get("inputs", []),
            declared_outputs=settings[name].get("outputs", []),
        )
        for name in bundle.models
        if name in settings
    }
    return Gateway(bundle, forwarder or StubForwarder(), contracts, ready_poll_s=0)


async def asgi_call(
    app, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request through an ASGI app: status, headers (lower-cased names), body."""
    raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    ]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path.split("?")[0],
        "query_string": path.partition("?")[2].encode(),
        "headers": raw_headers,
    }
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            raise ServingError(500, "the test's ASGI driver has no more body")
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    messages = []

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    answer_headers: dict[str, str] = {}
    for k, v in start["headers"]:  # a repeated header's values joined, as HTTP clients do
        name, value = k.decode(), v.decode("latin-1")
        answer_headers[name] = (
            f"{answer_headers[name]}, {value}" if name in answer_headers else value
        )
    return start["status"], answer_headers, b"".join(m.get("body", b"") for m in messages[1:])
