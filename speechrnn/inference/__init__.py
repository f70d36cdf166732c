"""Inference: batched prediction, streaming, keyword detection, runtime backends, export.

May import ``speechrnn.core``, ``model`` and ``data.labels`` (the vocabularies); never Lightning or Hydra.
"""
