"""speechrnn: keyword spotting with a basic (Elman) RNN.

Data flows audio -> features -> model -> outputs:
``audio`` reads clips, ``features`` turns them into MFCC frames, ``rnn`` is the
recurrence, ``model`` joins frontend, encoder and classifier, ``module`` trains it
with Lightning, and ``train`` / ``evaluate`` / ``transcribe`` are the entry points.
"""

__version__ = "0.1.0"
