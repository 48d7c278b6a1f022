"""A small Open Inference Protocol (V2) client over REST or gRPC, built on tritonclient.

tritonclient's HTTP client sends binary tensors by default, which MLServer answers with 422; this
client always sends JSON tensors. Extra headers (Seldon's `seldon-model`) pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["V2Client", "V2Error", "inspect"]

PROTOCOLS = ("rest", "grpc")


class V2Error(Exception):
    """The server answered with an error: HTTP status (or gRPC code) and its message."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass
class V2Client:
    """`address` is host:port of the REST or gRPC endpoint, depending on `protocol`."""

    address: str
    protocol: str = "rest"
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "rest":
            import tritonclient.http as http

            self._module = http
            self._client = http.InferenceServerClient(
                self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        else:
            import tritonclient.grpc as grpc

            self._module = grpc
            self._client = grpc.InferenceServerClient(self.address)

    def infer(
        self,
        model: str,
        X: np.ndarray,
        input_name: str = "predict",
        datatype: str = "FP32",
        outputs: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Send X as one tensor; return every output (or the named ones) as numpy arrays."""
        from tritonclient.utils import InferenceServerException, triton_to_np_dtype

        X = np.asarray(X)
        tensor = self._module.InferInput(input_name, list(X.shape), datatype)
        data = X.astype(triton_to_np_dtype(datatype)) if datatype != "BYTES" else X.astype(object)
        if self.protocol == "rest":
            tensor.set_data_from_numpy(data, binary_data=False)
        else:
            tensor.set_data_from_numpy(data)
        kwargs: dict = {"headers": self.headers} if self.headers else {}
        if outputs:
            kwargs["outputs"] = [
                self._module.InferRequestedOutput(name, **self._json_output()) for name in outputs
            ]
        try:
            if self.protocol == "rest":
                result = self._client.infer(model, [tensor], timeout=self.timeout_s, **kwargs)
                names = [o["name"] for o in result.get_response()["outputs"]]
            else:
                result = self._client.infer(
                    model, [tensor], client_timeout=self.timeout_s, **kwargs
                )
                names = [o.name for o in result.get_response().outputs]
        except InferenceServerException as e:
            raise V2Error(str(e.status()), e.message() or str(e)) from e
        return {name: result.as_numpy(name) for name in names}

    def _json_output(self) -> dict:
        return {"binary_data": False} if self.protocol == "rest" else {}

    def ready(self, model: str | None = None) -> bool:
        try:
            if model:
                return bool(self._client.is_model_ready(model, **self._header_kwargs()))
            return bool(self._client.is_server_ready(**self._header_kwargs()))
        except Exception:
            return False

    def _header_kwargs(self) -> dict:
        return {"headers": self.headers} if self.headers else {}

    def close(self) -> None:
        self._client.close()


def inspect(http_address: str, reference: str, wait_s: float = 5.0) -> dict:
    """The gateway's latest data for `<pipeline>.<step>.(inputs|outputs)[.<tensor>]`."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"http://{http_address}/inspect/{urllib.parse.quote(reference)}?wait={wait_s}"
    try:
        with urllib.request.urlopen(url, timeout=wait_s + 30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise V2Error(str(e.code), json.loads(e.read()).get("error", "")) from e
