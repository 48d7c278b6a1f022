"""Quiet by default: what TensorFlow, CUDA, absl, Keras and alibi-detect print never reaches the
bundle's output, its own lines and real warnings do, and LOG_LEVEL=debug brings the rest back.
The patterns are what those libraries printed here before (tests/support/framework_noise.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.framework_noise import noise_lines, run, user_environment

CLI = str(Path(sys.executable).with_name("income-bundle"))

# What training does with the frameworks, in small: import TensorFlow, build and save an
# OutlierVAE without a threshold; then a real warning and a real alibi-detect problem.
PROBE = """
import logging, sys, tempfile, warnings
import numpy as np
from income_bundle import quiet
quiet.import_tensorflow()
import tensorflow as tf
from alibi_detect.od import OutlierVAE
from alibi_detect.saving import save_detector

def net(width, units, out=None):
    layers = [tf.keras.layers.InputLayer(input_shape=(width,))]
    layers += [tf.keras.layers.Dense(n, activation="relu") for n in units]
    return tf.keras.Sequential(layers + ([tf.keras.layers.Dense(out)] if out else []))

x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
vae = OutlierVAE(threshold=None, score_type="mse", encoder_net=net(4, [3]),
                 decoder_net=net(2, [3], 4), latent_dim=2, samples=2)
vae.fit(x, loss_fn=tf.keras.losses.mse, epochs=1, batch_size=32, verbose=False)
vae.infer_threshold(x, threshold_perc=98)
save_detector(vae, tempfile.mkdtemp() + "/detector")
warnings.warn("a real warning from the project", UserWarning)
logging.getLogger("alibi_detect.od.vae").warning("a real problem in alibi-detect")
print("[probe] done", flush=True)
"""


@pytest.fixture(scope="module")
def probe_quiet() -> str:
    return run([sys.executable, "-c", PROBE], user_environment(), 300)


def test_framework_lines_are_dropped_and_real_ones_kept(probe_quiet):
    assert noise_lines(probe_quiet) == []
    assert "[probe] done" in probe_quiet
    assert "UserWarning: a real warning from the project" in probe_quiet
    assert "a real problem in alibi-detect" in probe_quiet


def test_log_level_debug_brings_the_framework_lines_back():
    """The same work with LOG_LEVEL=debug prints what the quiet run drops: the patterns match
    what these libraries really print (so the quiet test above can fail)."""
    loud = run([sys.executable, "-c", PROBE], user_environment(LOG_LEVEL="debug"), 300)
    kinds = {line.split(":")[0] for line in noise_lines(loud)}
    assert {"alibi-detect threshold notice", "alibi-detect folder notice",
            "Keras HDF5 warning"} <= kinds, loud[-3000:]  # fmt: skip
    assert "a real problem in alibi-detect" in loud


def test_demo_prints_no_framework_noise(training_report):
    """`make demo` as a user runs it: the project's lines only (it loads the drift detector, so
    TensorFlow, in its own process for the report)."""
    out = run([CLI, "demo"], user_environment(), 900)
    assert noise_lines(out) == [], out
    assert "scenario        rows  >50K accuracy" in out
    assert "drift report of the low-education window (20 rows, drift in Education" in out
    assert out.rstrip().endswith("[demo] gateway and MLServer stopped")


def test_training_prints_no_framework_noise(tmp_path):
    """`make artifacts`: the five artifacts trained into a scratch checkout (the committed
    model-settings.json files and a copy of the raw data), the project's lines only."""
    import shutil

    from income_bundle.paths import ARTIFACT_FOLDERS, data_dir, project_root

    for folder in ARTIFACT_FOLDERS.values():
        (tmp_path / folder).mkdir(parents=True)
        shutil.copy(project_root() / folder / "model-settings.json", tmp_path / folder)
    shutil.copytree(data_dir() / "raw", tmp_path / "data" / "raw")
    env = user_environment(INCOME_BUNDLE_ROOT=str(tmp_path), INCOME_DATA_DIR=str(tmp_path / "data"))
    out = run([CLI, "train", "--force"], env, 900)
    assert noise_lines(out) == [], out
    assert "[train] training the outlier detector (OutlierVAE)" in out
    assert "[train] packaged income-outlier: " in out and "[train] done in " in out
