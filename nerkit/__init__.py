"""nerkit: the logic the serving and training images share.

Serving imports only the light modules (labels, features, decoding, engine, artifact,
store, api); nothing under ``nerkit`` imports torch or transformers except
``nerkit.training``.
"""

__version__ = "0.1.0"
