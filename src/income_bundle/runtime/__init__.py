"""What MLServer runs in the income model folders: the runtimes and what they check.

- `artifact`: a folder's integrity (every file's sha256, the library versions it was built with);
- `contract`: what a model declares it takes, and the request checks that follow from it;
- `models`: the MLServer runtimes of the Seldon path (sklearn, drift, outlier, explainer);
- `cloudevents`: the detectors as CloudEvents sinks of KServe's payload logger.

MLServer imports these from the model folder, here and in the cluster's `seldonio/mlserver`
image alike, where this package is not installed: packaging (income_bundle.artifacts) copies this
package, with the parts of the bundle it uses (`errors`, and `datatypes`, `tensors` and `checks`
of `v2`), into every model folder as the package `income_mlserver`, laid out as in this source
tree. So these modules import the bundle only relatively, and otherwise only what that image has:
the standard library, numpy, grpc (for `errors`), prometheus_client, mlserver with its sklearn
and alibi-detect runtimes, alibi (and, for `cloudevents`, the CloudEvents SDK the KServe image
adds). Nothing is re-exported here: importing the package loads neither MLServer nor TensorFlow.
"""
