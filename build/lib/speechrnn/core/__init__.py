"""Building blocks every other part uses: errors, atomic writes, audio I/O.

Imports nothing else from the package, only the standard library, numpy, torch, torchaudio and soundfile.
"""
