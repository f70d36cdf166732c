"""The model: MFCC frontend, the Elman RNN and the torch baselines, the keyword spotter, checkpoints.

May import ``speechrnn.core``; never Lightning or Hydra (a deployed model needs torch alone).
"""
