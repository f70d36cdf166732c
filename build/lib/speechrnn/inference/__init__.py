"""Inference: batched prediction, streaming, keyword detection, runtime backends, export.

May import ``speechrnn.core`` and ``model``; never Lightning or Hydra.
"""
