"""The KServe path: the detectors as CloudEvents sinks of KServe's payload logger.

- `manifests`: the `kserve/` manifests as objects, and how to start their detectors locally;
- `client`: the three scenarios against a cluster's InferenceService (`make infer-kserve`).

The detectors' MLServer runtimes are `income_bundle.runtime.cloudevents`, copied into the
detector folders with the rest of the runtime package. Importing this package imports neither
MLServer nor a client library.
"""
