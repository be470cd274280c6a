"""Where models come from: a model source (``open_source``) and the S3 registry behind it.

- ``source``: ``open_source(uri, cache_dir)`` -> ``.live()`` and ``.fetch(pointer)``, the
  one way serving, the gate and the CLIs load a model;
- ``registry``: ``ModelStore``, versions and the LIVE pointer in S3 (upload, set_live,
  rollback), what publishing writes;
- ``cache``: the local extraction cache (reuse, install, prune);
- ``uri``: the model URI and version parser;
- ``s3``: the S3 client configuration and S3 errors as ``nerkit.errors``;
- ``s3_reader``: the standard-library S3 reader serving uses inside Lambda (``read_client``).
"""

from nerkit.store.cache import LoadedArtifact
from nerkit.store.registry import LIVE, TARBALL, ModelStore, Pointer, VersionInfo
from nerkit.store.s3 import S3Client, new_s3_client, read_client
from nerkit.store.source import ModelSource, open_source
from nerkit.store.uri import parse_model_uri, parse_s3_uri

__all__ = [
    "LIVE",
    "TARBALL",
    "LoadedArtifact",
    "ModelSource",
    "ModelStore",
    "Pointer",
    "S3Client",
    "VersionInfo",
    "new_s3_client",
    "open_source",
    "parse_model_uri",
    "parse_s3_uri",
    "read_client",
]
