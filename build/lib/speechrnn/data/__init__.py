"""Data: label vocabularies, the Speech Commands layout and splits, the decoded-audio cache,
augmentation, the Lightning data module, the Speech Commands download and the synthetic corpus.

May import ``speechrnn.core``.
"""
