"""Why the shipped models leave MLServer's adaptive batching off, shown on real MLServer.

It raises throughput at concurrency 8 (see the benchmark), but MLServer merges requests into
one: a malformed request fails every request batched with it, and the outlier detector's
outputs ([1, n], alibi-detect's layout) are split wrongly. If a new MLServer fixes either,
these tests fail and the decision is worth revisiting. That no shipped model batches adaptively is
tests/unit/test_adaptive_batching.py.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import orjson
import pytest

from income_bundle.paths import artifact_dir
from income_bundle_dev.benchmarks.gateway import _request

# Long enough that concurrent requests surely meet in one batch.
BATCHING = {"max_batch_size": 8, "max_batch_time": 0.2}


@pytest.fixture(scope="module")
def batching_mlserver(training_report, tmp_path_factory):
    from income_bundle.seldon.local import stage_model_folder
    from income_bundle.server import MLServer

    directory = tmp_path_factory.mktemp("batching")
    models = {
        f"{name}-batched": stage_model_folder(
            artifact_dir(name), directory / name, f"{name}-batched", BATCHING
        )
        for name in ("income", "income-preprocess", "income-outlier")
    }
    with MLServer(models=models, parallel_workers=1) as server:
        yield server.http_url


async def _post_all(url: str, model: str, bodies: list[bytes]) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes) -> tuple[int, dict]:
            async with session.post(
                f"{url}/v2/models/{model}/infer",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                return response.status, orjson.loads(await response.read())

        return await asyncio.gather(*(post(body) for body in bodies))


def test_one_malformed_request_fails_its_whole_batch(batching_mlserver, scenario):
    good = _request(scenario["reference"].X[:20])
    bad = orjson.dumps(
        {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 12], "data": [1e9] * 12}]}
    )
    answers = asyncio.run(_post_all(batching_mlserver, "income-batched", [good] * 7 + [bad]))
    good_ones_failed = [status for status, _ in answers[:7] if status != 200]
    assert len(good_ones_failed) >= 2, answers


def test_outlier_outputs_are_split_wrongly(batching_mlserver, scenario):
    X = scenario["reference"].X[:20]
    [(status, answer)] = asyncio.run(
        _post_all(batching_mlserver, "income-preprocess-batched", [_request(X)])
    )
    assert status == 200
    transform = answer["outputs"][0]
    features = np.asarray(transform["data"]).reshape(transform["shape"])
    bodies = [_request(features[: 5 + i], "transform", "FP64") for i in range(4)]
    answers = asyncio.run(_post_all(batching_mlserver, "income-outlier-batched", bodies))
    shapes = [
        {o["name"]: o["shape"] for o in body["outputs"]}
        for status, body in answers
        if status == 200
    ]
    assert shapes, answers
    # Unbatched, a request of n rows gets is_outlier of shape [1, n].
    assert any(s["is_outlier"] != [1, 5 + i] for i, s in enumerate(shapes)), shapes
