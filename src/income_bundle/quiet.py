"""Quiet by default: the frameworks' start-up chatter off, the project's own lines and real
warnings kept. `LOG_LEVEL=debug` in the environment brings everything back.

TensorFlow, CUDA and absl log from C++ as soon as TensorFlow is imported, so their levels are
environment variables that must be set before that import (`configure()`, first thing in every
process the project starts; children inherit them, and `environment()` gives them to MLServer).
Two kinds of line survive any level and are dropped by pattern instead: absl's lines written
before `absl::InitializeLog()` (the CUDA plugin registrations, at import: `import_tensorflow()`
filters the process's stderr while it imports), and Python-level messages of alibi-detect and
Keras that say nothing is wrong (logging filters and warnings filters on their exact text).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

__all__ = [
    "ENVIRONMENT",
    "NATIVE_NOISE",
    "configure",
    "environment",
    "import_tensorflow",
    "verbose",
]

# Set in this process and its children. LOG_LEVEL=debug is the one switch for the frameworks'
# lines, so TF_CPP_MIN_LOG_LEVEL is raised to 3 whatever it was; CUDA_VISIBLE_DEVICES is only a
# default (a GPU chosen on purpose stays chosen).
ENVIRONMENT = {
    # 3: TensorFlow's C++ INFO, WARNING and ERROR lines off; on a machine without a GPU they
    # are "failed call to cuInit" and the like. Real failures still raise Python exceptions.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # The bundle computes on the CPU (seeded training, MLServer's small models).
    "CUDA_VISIBLE_DEVICES": "",
}
OVERRIDDEN = ("TF_CPP_MIN_LOG_LEVEL",)

# Lines TensorFlow's import writes to stderr from C++ whatever TF_CPP_MIN_LOG_LEVEL says.
NATIVE_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory"),
)

# Logger -> messages (regular expressions) that report routine work, not a problem.
LOG_NOISE = {
    # OutlierVAE and IForest are built without a threshold, then `infer_threshold` sets it.
    "alibi_detect.od.vae": (r"^No threshold level set",),
    "alibi_detect.od.isolationforest": (r"^No threshold level set",),
    # save_detector creates the folders it writes.
    "alibi_detect.saving.saving": (r"does not exist and is now created",),
    "alibi_detect.saving._tensorflow.saving": (r"does not exist and is now created",),
    # tf_keras, loading the saved VAE.
    "tensorflow": (r"^Compiled the loaded model, but the compiled metrics have yet to be built",),
}

# (message regex, category) of Python warnings about routine work.
WARNING_NOISE = (
    # alibi-detect saves the VAE's networks as HDF5, the format MLServer's runtime loads.
    (r"You are saving your model as an HDF5 file", UserWarning),
)


def verbose() -> bool:
    """Whether LOG_LEVEL=debug asks for every framework's lines."""
    return os.environ.get("LOG_LEVEL", "").strip().lower() == "debug"


def environment() -> dict[str, str]:
    """The variables that quiet a child process (MLServer and its workers); none when verbose."""
    if verbose():
        return {}
    return {
        name: value if name in OVERRIDDEN else os.environ.get(name, value)
        for name, value in ENVIRONMENT.items()
    }


class _DropMessages(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


_configured = False


def configure(debug: bool = False) -> None:
    """Quiet the frameworks in this process and the processes it starts; call it before anything
    imports TensorFlow. `debug` (a `--verbose` flag) sets LOG_LEVEL=debug, for the children
    too; with LOG_LEVEL=debug it does nothing. Safe to call more than once."""
    global _configured
    if debug:
        os.environ["LOG_LEVEL"] = "debug"
    if _configured or verbose():
        return
    _configured = True
    os.environ.update(environment())
    for logger, patterns in LOG_NOISE.items():
        logging.getLogger(logger).addFilter(_DropMessages(patterns))
    for message, category in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextlib.contextmanager
def _stderr_without(patterns: tuple[re.Pattern[str], ...]) -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes there, not to sys.stderr) and replay every line
    that matches none of the patterns."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not any(p.search(line) for p in patterns):
                    print(line, file=sys.stderr)


def import_tensorflow() -> None:
    """Import TensorFlow (Keras 2, as served) with `configure()`'s quiet; the modules that need it
    (alibi-detect, tf_keras) then import it silently. Everything TensorFlow writes that is not
    known noise is still shown, and an import error still raises."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # OutlierVAE needs Keras 2
    if "tensorflow" in sys.modules:
        return
    configure()
    if verbose():
        import tensorflow

        return
    with _stderr_without(NATIVE_NOISE):
        import tensorflow  # noqa: F401
