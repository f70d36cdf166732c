"""speechrnn: keyword spotting with a basic (Elman) RNN.

Data flows audio -> features -> model -> outputs, and the folders say where each part lives:
``core`` (errors, atomic writes, audio I/O), ``data`` (labels, the Speech Commands layout,
cache, augmentation, the data module, download, the synthetic corpus), ``model`` (the MFCC
frontend, the Elman RNN, the spotter, checkpoints), ``training`` (the Lightning module and
``train(cfg)``), ``inference`` (prediction, streaming, detection, backends, export) and
``evaluation`` (reports, evaluating a checkpoint). The modules at this level are the
commands, ``python -m speechrnn.<command>``; they import the library and nothing imports them.
"""

__version__ = "0.1.0"
