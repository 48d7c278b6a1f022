"""Calls a V2 server with KServe's Python SDK, as a KServe user would; run in the SDK's own venv.

Reads a plan (JSON) on stdin and prints one JSON object: per case, the outputs as the SDK decoded
them, or the error it raised. Imports only the SDK and the standard library: no income_bundle,
whose pins clash with the SDK's (see requirements-kserve-sdk.txt).

Plan: {"rest_url": "http://host:port", "grpc_address": "host:port", "cases": [{"id": str,
"protocol": "rest" | "grpc", "binary": bool, "model_name": str, "headers": {...},
"input": {"name", "datatype", "shape", "data": [flat values]}, "outputs": [names] | null}]}
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys

import numpy as np
from kserve.protocol.infer_type import RequestedOutput

from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def _request(case: dict) -> InferRequest:
    tensor = case["input"]
    data = np.asarray(tensor["data"]).reshape(tensor["shape"])
    data = data.astype(object if tensor["datatype"] == "BYTES" else _NUMPY[tensor["datatype"]])
    infer_input = InferInput(tensor["name"], list(tensor["shape"]), tensor["datatype"])
    infer_input.set_data_from_numpy(data, binary_data=case["binary"])
    outputs = None
    if case.get("outputs"):
        parameters = {"binary_data": case["binary"]} if case["protocol"] == "rest" else None
        outputs = [RequestedOutput(name, parameters) for name in case["outputs"]]
    return InferRequest(case["model_name"], [infer_input], request_outputs=outputs)


_NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def _decoded(response) -> list[dict]:
    outputs = []
    for output in response.outputs:
        values = output.as_numpy()
        flat = [v.decode() if isinstance(v, bytes) else v for v in values.ravel().tolist()]
        outputs.append(
            {
                "name": output.name,
                "datatype": output.datatype,
                "shape": [int(d) for d in output.shape],
                "data": flat,
            }
        )
    return outputs


async def _run(plan: dict) -> dict:
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    grpc = InferenceGRPCClient(plan["grpc_address"], retries=0, timeout=60)
    results: dict[str, dict] = {}
    try:
        for case in plan["cases"]:
            try:
                request = _request(case)
                if case["protocol"] == "rest":
                    response = await rest.infer(
                        plan["rest_url"], request, case["model_name"], headers=case["headers"]
                    )
                else:
                    response = await grpc.infer(request, headers=list(case["headers"].items()))
                results[case["id"]] = {"outputs": _decoded(response), "error": None}
            except Exception as e:  # reported per case: the test asserts on it
                results[case["id"]] = {"outputs": None, "error": f"{type(e).__name__}: {e}"}
        ready = {
            "rest": await rest.is_server_ready(plan["rest_url"]),
            "grpc": await grpc.is_server_ready(),
        }
    finally:
        await rest.close()
        await grpc.close()
    return {
        "kserve": importlib.metadata.version("kserve"),
        "server_ready": ready,
        "results": results,
    }


def main() -> None:
    print(json.dumps(asyncio.run(_run(json.load(sys.stdin)))))


if __name__ == "__main__":
    main()
