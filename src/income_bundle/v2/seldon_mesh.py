"""What seldon-mesh (Seldon Core v2.10.2's Envoy, agent and pipeline gateway) puts around an
answer: versioned model names, route headers, request ids and keys.

Each fact is from SeldonIO/seldon-core at tag v2.10.2 (extracted by `make seldon-core`), cited
beside it:
- the agent loads a model into MLServer as `<model>_<version>` with version "1"
  (scheduler/pkg/util/model.go `GetVersionedModelName`, `GetPinnedModelVersion`;
  agent/repository/mlserver/mlserver.go `updateNameAndVersion`), so MLServer answers
  `model_name: income_1`, `model_version: "1"`;
- Envoy adds the response header `x-seldon-route: :<model>_1:` to a model's answer and
  `:<pipeline>.pipeline:` to a pipeline's (envoy/xdscache/resource.go
  `createWeightedModelClusterAction`, `createWeightedPipelineClusterAction`, `wrapRouteHeader`
  with `SeldonRouteSeparator` ":"); the seldon CLI counts answers by it (`-i N`) and saves it for
  `--sticky-session` (operator/pkg/cli/infer.go `updateSummary`, session.go);
- the pipeline gateway makes a request id with rs/xid (util/ids.go `CreateRequestId`) and answers
  with the Kafka key `<partition>.<pipeline>.<id>` as `x-request-id`
  (kafka/pipeline/kafkamanager.go `infer`, httpserver.go, grpcserver.go).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import socket
import struct
import time
from base64 import b32hexencode

__all__ = [
    "PINNED_MODEL_VERSION",
    "PIPELINE_VERSION",
    "ROUTE_HEADER",
    "encode_xid",
    "model_route",
    "new_xid",
    "pipeline_key",
    "pipeline_route",
    "versioned_model_name",
]

ROUTE_HEADER = "x-seldon-route"  # util/constants.go SeldonRouteHeader
ROUTE_SEPARATOR = ":"  # envoy/xdscache/resource.go SeldonRouteSeparator
PINNED_MODEL_VERSION = "1"  # util/model.go GetPinnedModelVersion
# A pipeline's version as the dataflow engine writes it in `x-pipeline-version`: the scheduler
# counts a pipeline's versions from 1, and a bundle's pipelines are loaded once.
PIPELINE_VERSION = "1"


def versioned_model_name(model: str) -> str:
    """`income` -> `income_1` (util/model.go GetVersionedModelName, separator "_")."""
    return f"{model}_{PINNED_MODEL_VERSION}"


def model_route(model: str) -> str:
    """The `x-seldon-route` value Envoy adds to a model's answer: `:income_1:`."""
    return f"{ROUTE_SEPARATOR}{versioned_model_name(model)}{ROUTE_SEPARATOR}"


def pipeline_route(pipeline: str) -> str:
    """The `x-seldon-route` value Envoy adds to a pipeline's answer: `:<p>.pipeline:`."""
    return f"{ROUTE_SEPARATOR}{pipeline}.pipeline{ROUTE_SEPARATOR}"


def pipeline_key(pipeline: str, request_id: str, partition: int = 0) -> str:
    """The pipeline gateway's Kafka key, which it answers as `x-request-id` (kafkamanager.go
    `getCompositeKey(partition, resourceName, requestId, ".")`)."""
    return f"{partition}.{pipeline}.{request_id}"


# -- rs/xid (github.com/rs/xid v1.6.0, id.go), which util/ids.go calls ------------------------
# No maintained Python package makes these (PyPI's `xid` was last released in 2017), so this
# follows id.go: 12 bytes = 4-byte big-endian Unix seconds, 3 bytes of a hash of the machine id,
# 2-byte pid, 3-byte counter starting at a random value; written as lower-case base32hex
# without padding, 20 characters of [0-9a-v], sortable by time.


def _machine_id() -> bytes:
    """id.go readMachineID: the first 3 bytes of the SHA-256 of the platform's machine id (on
    Linux /etc/machine-id, then /sys/class/dmi/id/product_uuid, as read, newline and all),
    else of the host name."""
    for path in ("/etc/machine-id", "/sys/class/dmi/id/product_uuid"):
        try:
            with open(path, "rb") as f:
                found = f.read()
        except OSError:
            continue
        if found:
            return hashlib.sha256(found).digest()[:3]
    return hashlib.sha256(socket.gethostname().encode()).digest()[:3]


# Machine and process, read once as id.go does (its package variables `machineID`, `pid`).
_MIDDLE = _machine_id() + struct.pack(">H", os.getpid() & 0xFFFF)
# next() on itertools.count is atomic in CPython: ids made on several threads never repeat.
_counter = itertools.count(int.from_bytes(secrets.token_bytes(3), "big") + 1)


def new_xid(now: float | None = None) -> str:
    """A new xid as rs/xid's `New().String()` writes it: 20 characters of [0-9a-v]."""
    count = next(_counter) & 0xFFFFFF
    seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
    return encode_xid(struct.pack(">I", seconds) + _MIDDLE + count.to_bytes(3, "big"))


def encode_xid(raw: bytes) -> str:
    """12 bytes as an xid's text: base32hex, lower case, no padding (id.go `encode`)."""
    return b32hexencode(raw)[:20].decode("ascii").lower()
