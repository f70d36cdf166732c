"""Training: the Lightning module, gradient diagnostics, and ``train(cfg)``.

May import ``speechrnn.core``, ``data``, ``model`` and ``evaluation``.
"""
