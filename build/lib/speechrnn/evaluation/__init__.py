"""Evaluation: classification reports, evaluating a checkpoint on clips or folders, streaming scores.

May import ``speechrnn.core``, ``data``, ``model`` and ``inference``.
"""
