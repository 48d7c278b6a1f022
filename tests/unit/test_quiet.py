"""Quiet by default (income_bundle.quiet): the frameworks' levels set for this process and its
children, their routine messages dropped by exact text, every other line kept; LOG_LEVEL=debug
turns it all off. What the frameworks really print is tests/integration/test_quiet_output.py."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from income_bundle import quiet

VARIABLES = ("LOG_LEVEL", *quiet.ENVIRONMENT)


@pytest.fixture
def fresh(monkeypatch):
    """An unconfigured process: no quiet variables, no filters; everything restored after."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(quiet, "_configured", False)
    loggers = {name: list(logging.getLogger(name).filters) for name in quiet.LOG_NOISE}
    with warnings.catch_warnings():
        yield
    for name, filters in loggers.items():
        logging.getLogger(name).filters[:] = filters


def test_children_get_the_quiet_variables_unless_debug(fresh, monkeypatch):
    assert quiet.environment() == {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a GPU chosen on purpose stays chosen
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # a default set earlier is raised
    assert quiet.environment() == {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "0"}
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert quiet.environment() == {}


def test_configure_sets_the_levels_before_tensorflow_loads(fresh):
    quiet.configure()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_verbose_flag_is_debug_for_this_process_and_its_children(fresh):
    quiet.configure(debug=True)
    assert os.environ["LOG_LEVEL"] == "debug" and quiet.verbose() and quiet.environment() == {}
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


def test_routine_messages_are_dropped_and_real_ones_kept(fresh, caplog):
    quiet.configure()
    vae = logging.getLogger("alibi_detect.od.vae")
    vae.warning("No threshold level set. Need to infer threshold using `infer_threshold`.")
    vae.warning("the encoder has no layers")
    logging.getLogger("alibi_detect.saving.saving").warning(
        "Directory /tmp/x/detector does not exist and is now created."
    )
    logging.getLogger("tensorflow").warning(
        "Compiled the loaded model, but the compiled metrics have yet to be built."
    )
    logging.getLogger("tensorflow").warning(
        "5 out of the last 5 calls triggered tf.function retracing"
    )
    assert [r.getMessage() for r in caplog.records] == [
        "the encoder has no layers",
        "5 out of the last 5 calls triggered tf.function retracing",
    ]


def test_routine_warnings_are_dropped_and_real_ones_kept(fresh):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.configure()  # its filters go in front of that one
        warnings.warn(
            "You are saving your model as an HDF5 file via `model.save()`.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("a real problem", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a real problem"]


def test_debug_keeps_every_message(fresh, monkeypatch, caplog):
    monkeypatch.setenv("LOG_LEVEL", "debug")
    quiet.configure()
    logging.getLogger("alibi_detect.od.vae").warning("No threshold level set.")
    assert [r.getMessage() for r in caplog.records] == ["No threshold level set."]


def test_native_lines_at_import_are_filtered_and_others_replayed(capfd):
    """What C++ writes to file descriptor 2 while TensorFlow imports: known noise dropped."""
    with quiet._stderr_without(quiet.NATIVE_NOISE):
        os.write(
            2,
            b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            b"E0000 00:00:1796684782.192371   31216 cuda_dnn.cc:8310] Unable to register cuDNN "
            b"factory: Attempting to register factory for plugin cuDNN\n"
            b"a real error from a library\n",
        )
    err = capfd.readouterr().err
    assert err == "a real error from a library\n"
