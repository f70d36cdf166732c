"""Training: the Lightning module, gradient diagnostics, CUDA-graph replay on a GPU, and ``train(cfg)``.

May import ``speechrnn.core``, ``data``, ``model`` and ``evaluation``.
"""
