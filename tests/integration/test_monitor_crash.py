"""What a crash of the local monitor loses, exactly: `income-bundle serve` (gateway and monitor in
one process) is killed with SIGKILL under load from 8 clients and restarted on the same store.

The local source writes hand-overs in the order the gateway answered them, each batch in one
transaction. So a crash loses only a tail: if a request is in the store, every request answered
before it was even sent is there too; and every stored record is whole.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from income_bundle.monitoring.store import SqliteStore
from income_bundle.seldon.local import STORE_FILE, LocalSeldon, ServeSettings
from tests.integration.test_gateway_kafka import PIPELINE, infer

CLIENTS = 8


@pytest.mark.slow
def test_a_crash_loses_only_the_newest_hand_overs_and_no_record_is_partial(
    training_report, scenario, tmp_path
):
    config = ServeSettings(state_dir=tmp_path / "state")
    timeline: dict[str, tuple[float, float, int]] = {}  # id -> (sent, answered, rows)
    lock = threading.Lock()
    crashed = threading.Event()
    seldon = LocalSeldon(config).start()
    try:

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            X = scenario["outliers"].X
            while not crashed.is_set():
                rows = int(rng.integers(1, 8))
                start = int(rng.integers(0, len(X) - rows))
                sent = time.monotonic()
                try:
                    answer = infer(seldon.http_url, X[start : start + rows])
                except OSError:
                    return  # the crash cut this request off
                with lock:
                    timeline[answer["id"]] = (sent, time.monotonic(), rows)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(timeline) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        seldon.kill()
        crashed.set()
        for thread in threads:
            thread.join()
    finally:
        seldon.stop()
    assert len(timeline) >= 300, "the load never got going"

    # The store opens after the crash (SQLite recovers from its write-ahead log).
    store = SqliteStore(config.state_dir / STORE_FILE)
    stored = {r.request_id: r for r in store.requests(PIPELINE)}
    store.close()

    assert set(stored) <= set(timeline), "a record of a request nobody was answered for"
    for request_id, record in stored.items():
        rows = timeline[request_id][2]
        assert len(record.rows) == rows and len(record.predicted) == rows
        assert len(record.outlier_flags) == rows and len(record.outlier_scores) == rows
    lost = set(timeline) - set(stored)
    latest_stored_send = max(timeline[i][0] for i in stored)
    for request_id in lost:
        # Lost: answered after the newest stored request was sent, i.e. in the tail.
        assert timeline[request_id][1] > latest_stored_send or not stored, request_id
    print(f"answered {len(timeline)}, stored {len(stored)}, lost in the crash {len(lost)}")
