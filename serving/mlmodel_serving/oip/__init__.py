"""The Open Inference Protocol's gRPC messages (package ``inference``).

``grpc_predict_v2.proto`` is this repository's own description of the protocol's
messages; ``grpc_predict_v2_pb2`` (and its ``.pyi``) is generated from it by
``hack/gen-grpc.sh``. The service is served by :mod:`mlmodel_serving.grpcserver`.
"""
