"""The V2 (Open Inference Protocol) core, one module per concept:

- `datatypes`: the one table of V2 datatypes (numpy dtype, item size, kind, limits);
- `tensors`: the one Tensor type and its codecs (JSON, gRPC, raw bytes);
- `checks`: the request checks (request ids, JSON bodies, tensors, a model's table of rows);
- `seldon_kafka`: Seldon Core v2's Kafka dataflow (topics, keys, headers, values);
- `seldon_mesh`: what seldon-mesh puts around an answer (versioned model names, `x-seldon-route`,
  xid request ids and the pipeline gateway's key).

`datatypes`, `tensors` and `checks` import only the standard library, numpy and
`income_bundle.errors`, relatively: packaging copies them into every model folder, where the
MLServer runtimes use them (see income_bundle.runtime). Nothing is re-exported here, so importing
one module never pulls in another's dependencies.
"""
