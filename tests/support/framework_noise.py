"""Lines TensorFlow, CUDA, absl, Keras and alibi-detect print that the bundle's output must not
show (income_bundle.quiet). Taken from what `income-bundle train` and `make demo` printed before
the quiet defaults, on a machine without a GPU:

    2026-12-07 23:06:22.182173: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:477] Unable to register cuFFT factory: ...
    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    E0000 00:00:1796684782.192371   31216 cuda_dnn.cc:8310] Unable to register cuDNN factory: ...
    2026-12-07 23:06:39.999476: E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:152] failed call to cuInit: ...
    No threshold level set. Need to infer threshold using `infer_threshold`.
    Directory .../detectors/income-outlier/detector does not exist and is now created.
    .../tf_keras/src/engine/training.py:3098: UserWarning: You are saving your model as an HDF5 file via `model.save()`. ...
      saving_api.save_model(
    WARNING:tensorflow:Compiled the loaded model, but the compiled metrics have yet to be built. ...
"""

from __future__ import annotations

import os
import re
import subprocess

FRAMEWORK_NOISE = {
    "TensorFlow C++ log line": re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\]"
    ),
    "absl log line": re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]"),
    "absl pre-init notice": re.compile(r"absl::InitializeLog"),
    "CUDA": re.compile(r"\bcu(Init|DNN|FFT|BLAS)\b|\bCUDA\b"),
    "TensorFlow Python warning": re.compile(r"^WARNING:tensorflow:"),
    "alibi-detect threshold notice": re.compile(r"No threshold level set"),
    "alibi-detect folder notice": re.compile(r"does not exist and is now created"),
    "Keras HDF5 warning": re.compile(
        r"saving your model as an HDF5 file|^\s*saving_api\.save_model\("
    ),
}


def noise_lines(output: str) -> list[str]:
    """The output's lines that come from the frameworks, each with what it is."""
    return [
        f"{kind}: {line}"
        for line in output.splitlines()
        for kind, pattern in FRAMEWORK_NOISE.items()
        if pattern.search(line)
    ]


def user_environment(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of the levels the test session sets."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "LOG_LEVEL")}  # fmt: skip
    return {**env, **extra}


def run(command: list[str], env: dict[str, str], timeout: float) -> str:
    """The command's stdout and stderr, one after the other; fails the test on a non-zero exit."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output
