"""The KServe path: the detectors as CloudEvents sinks of KServe's payload logger.

- `runtime`: the MLServer runtimes (copied into the detector folders as `income_cloudevents.py`);
- `manifests`: the `kserve/` manifests as objects, and how to start their detectors locally;
- `client`: the three scenarios against a cluster's InferenceService (`make infer-kserve`).

Importing this package imports neither MLServer nor a client library.
"""
