"""The cache: per node profile, every resource serialized once per version.

It knows nothing of gRPC or of where resources come from: translation hands it protobuf
messages, the server reads encoded bytes from it.
"""
