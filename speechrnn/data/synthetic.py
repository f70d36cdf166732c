"""An offline, synthetic Speech Commands corpus spoken by espeak-ng and a neural voice.

Lets the pipeline be trained and tested with no download: each word is spoken by a
few hundred "speakers", each a distinct espeak-ng voice (accent, variant, rate,
pitch, pitch range), in the exact Speech Commands layout. Validation and test
speakers use (accent, variant) pairs no training speaker uses. Training can also
have "neural speakers" (``speechrnn.data.neural_voice``): espeak-ng's phonemes spoken
by a VITS model of a real person, reshaped per speaker; they bring real speech's
spectrum, and since they are all one person they stay out of the held-out splits.

libespeak-ng (from ``espeakng_loader``) is driven through ctypes. Its synthesiser
keeps static state between utterances (pitch-flutter phase, AGC, filter memories)
that no API call resets, so a word spoken twice differs. ``synthesize`` therefore
reloads the library (dlclose + dlopen, ~0.5 ms) before each clip, which makes a clip
a pure function of (word, voice) and a corpus a pure function of its arguments.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import json
import math
import multiprocessing
import threading
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import espeakng_loader
import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T
from tqdm import tqdm

from speechrnn.core.atomic import staged_dir
from speechrnn.core.audio import SAMPLE_RATE, as_float, to_pcm16
from speechrnn.core.machine import torch_threads, usable_cpus
from speechrnn.data.layout import DatasetError
from speechrnn.data.labels import BACKGROUND_NOISE_DIR, WORDS_V2
from speechrnn.data.neural_voice import (MODEL, NOISE_PER_ID, NOISE_SIZE, NeuralVoice, check_voice,
                                        sample_neural_voices, speak_phonemes)
from speechrnn.data.noise import noise_recordings

# Every English accent espeak-ng ships except en-Shaw, which reads the Shavian
# alphabet with plain "en" phonemes: 8 distinct pronunciations of the same word.
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
# Human-sounding variants of espeak-ng-data/voices/!v. Left out: whispers (whisper,
# whisperf, caleb), robots and heavy echo (robosoft*, UniRobot, anikaRobot, announcer,
# RicishayMax*), effects (croak, Demonic, Tweaky, fast), a collapsed formant that blurs
# vowels (Andy, AnxiousAndy, Lee, Jacky: F3; kaukovalta, marcelo: F1), over-driven
# voicing (iven, iven2), near-copies (Hugo, Gene2, edward2, michel, miguel, steph2,
# steph3, iven4, klatt4-6) and "Mr serious" (a space in its name).
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "adam", "Alex", "Alicia", "Andrea", "Annie", "antonio",
            "aunty", "belinda", "benjamin", "boris", "david", "Denis", "Diogo", "ed", "edward",
            "Gene", "grandma", "grandpa", "Henrique", "ian", "iven3", "john", "linda",
            "Marco", "Mario", "max", "Michael", "Mike", "mike2", "Nguyen", "norbert", "pablo",
            "paul", "pedro", "quincy", "Reed", "rob", "robert", "sandro", "shelby", "steph",
            "Storm", "travis", "victor", "zac")
RATES, PITCHES, RANGES = (130, 210), (25, 75), (20, 80)  # sampling bounds of a speaker's voice
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
MAX_SPEECH = 0.9  # seconds; slower renderings are re-spoken faster so the word fits the clip
MARGIN, FADE = 800, 80  # samples at 16 kHz: 50 ms kept clear at each edge when the word allows, 5 ms fades
MARKER = ".complete.json"
README_TITLE = "# Synthetic Speech Commands (espeak-ng)"
FORMAT = 1  # bump when the rendering changes, so an old corpus is refused by name (never silently reused)
PARALLEL_MIN_CLIPS = 2000  # below this, one process: spawning workers would cost more than it saves
MAX_WORKERS = 8  # each worker holds its own torch (a few hundred MB); 8 render the default corpus in seconds


@lru_cache(maxsize=1)
def available_variants() -> frozenset[str]:
    """Names of the voice variants in espeakng_loader's espeak-ng-data."""
    return frozenset(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir())


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng accent, a voice variant and its prosody.

    Args:
        accent (str): espeak-ng language voice, e.g. ``"en-us"`` or ``"en-gb-scotland"``.
        variant (str): a file of ``espeak-ng-data/voices/!v``, e.g. ``"m3"`` or ``"f2"``.
        rate (int, optional): words per minute, 80 to 450. (Default: ``175``)
        pitch (int, optional): base pitch, 0 to 99 (50 = the variant's own). (Default: ``50``)
        range (int, optional): pitch range, 0 (monotone) to 99. (Default: ``50``)
    """

    accent: str
    variant: str
    rate: int = 175
    pitch: int = 50
    range: int = 50

    def __post_init__(self):
        check_voice(self, (("rate", 80, 450), ("pitch", 0, 99), ("range", 0, 99)), integers=True)
        if self.variant not in available_variants():
            raise ValueError(f"unknown espeak-ng variant {self.variant!r}: expected a file of voices/!v such as 'm3'")

    @property
    def speaker_id(self) -> str:
        """8 hex digits derived from the whole voice, like Speech Commands speaker ids."""
        key = f"{self.accent}|{self.variant}|{self.rate}|{self.pitch}|{self.range}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]


# ---- libespeak-ng through ctypes (constants from speak_lib.h) ----
_SYNCHRONOUS, _CHARS_UTF8, _POS_CHARACTER, _EE_OK = 2, 1, 1, 0
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA in UTF-8
_RATE, _PITCH, _RANGE = 1, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()
_chunks: list[np.ndarray] = []
_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None)


@_CALLBACK
def _on_audio(wav, num_samples, events):  # int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
    if wav and num_samples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    return 0  # continue


def _fresh_library() -> tuple[ctypes.CDLL, int]:
    """(Re)load libespeak-ng so its static state is as after a fresh start; returns (lib, rate)."""
    global _lib
    if _lib is not None:
        _lib.espeak_Terminate()
        _ctypes.dlclose(_lib._handle)
        _lib = None
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {espeakng_loader.get_data_path()}")
    lib.espeak_SetSynthCallback(_on_audio)
    _lib = lib
    return lib, rate


def espeak_version() -> str:
    """The version of the bundled libespeak-ng, e.g. ``"1.52.0"``."""
    with _lock:  # through the reloadable handle: a second dlopen would pin the library's state
        lib, _ = _fresh_library()
        return lib.espeak_Info(None).decode()


def synthesize(word: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Speak ``word`` with ``voice`` at espeak-ng's native rate (22,050 Hz).

    The output depends only on ``(word, voice)``: the library is reloaded and its
    noise generators seeded from them before each call.

    Args:
        word (str): text to speak (UTF-8, no SSML).
        voice (Voice): who speaks it.

    Returns:
        (np.ndarray, int): ``(num_samples,)`` int16 samples, including espeak's own
        short leading and trailing silence, and the sample rate in Hz.

    Raises:
        ValueError: empty ``word``, or an accent espeak-ng does not know.
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word must be a non-empty string, got {word!r}")
    text = word.encode() + b"\0"
    seed = zlib.crc32(f"{word}|{voice.speaker_id}".encode())
    with _lock:
        lib, rate = _fresh_library()
        if lib.espeak_SetVoiceByName(f"{voice.accent}+{voice.variant}".encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice.accent!r}; English ones are {ACCENTS}")
        for param, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.range)):
            lib.espeak_SetParameter(param, value, 0)
        lib.espeak_ng_SetRandSeed(seed)
        _libc.srand(seed)  # breath noise uses libc rand()
        _chunks.clear()
        err = lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        wave = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    if err != _EE_OK:
        raise RuntimeError(f"espeak_Synth({word!r}, {voice}) failed with error {err}")
    return wave, rate


@lru_cache(maxsize=4096)
def phonemes(word: str, accent: str) -> str:
    """The IPA phonemes espeak-ng gives ``word`` in ``accent``, e.g. ``"jˈɛs"`` for ``("yes", "en-us")``.

    Cached: every neural speaker of an accent speaks the same words, and a call reloads the library.

    Raises:
        ValueError: empty ``word``, or an accent espeak-ng does not know.
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word must be a non-empty string, got {word!r}")
    text = ctypes.create_string_buffer(word.encode())
    with _lock:
        lib, _ = _fresh_library()
        if lib.espeak_SetVoiceByName(accent.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {accent!r}; English ones are {ACCENTS}")
        cursor, parts = ctypes.c_void_p(ctypes.addressof(text)), []
        while cursor.value:  # one clause a call; the cursor moves on, to NULL at the end
            if part := lib.espeak_TextToPhonemes(ctypes.byref(cursor), _CHARS_UTF8, _PHONEMES_IPA):
                parts.append(part.decode())
    return " ".join(parts)


def sample_speakers(num_speakers: int, val_speakers: int, test_speakers: int, seed: int = 0,
                    accents=ACCENTS, variants=VARIANTS) -> dict[str, list[Voice]]:
    """Draw distinct voices for the training, validation and testing splits.

    The (accent, variant) pairs are shuffled and dealt to the splits in proportion to
    their sizes, so a held-out speaker never shares its pair with a training speaker;
    within a split, speakers cycle through its pairs with random rate, pitch and range.

    Returns:
        dict[str, list[Voice]]: ``{"training": [...], "validation": [...], "testing": [...]}``.
    """
    num_train = num_speakers - val_speakers - test_speakers
    if min(val_speakers, test_speakers) < 0 or num_train < 1:
        raise ValueError(f"need val_speakers, test_speakers >= 0 and num_speakers > their sum, got "
                         f"num_speakers={num_speakers}, val_speakers={val_speakers}, test_speakers={test_speakers}")
    rng = np.random.default_rng([seed, 0])
    pairs = [(a, v) for a in accents for v in variants]
    rng.shuffle(pairs)
    counts = {"testing": test_speakers, "validation": val_speakers, "training": num_train}
    share = {s: (max(1, round(len(pairs) * n / num_speakers)) if n else 0) for s, n in counts.items()}
    share["training"] = len(pairs) - share["testing"] - share["validation"]
    if share["training"] < 1:
        raise ValueError(f"{len(pairs)} (accent, variant) pairs cannot be split three ways; pass more accents or variants")
    out, start, seen = {}, 0, set()
    for split, n in counts.items():
        pool, start = pairs[start:start + share[split]], start + share[split]
        voices = []
        while len(voices) < n:
            accent, variant = pool[len(voices) % len(pool)]
            voice = Voice(accent, variant, int(rng.integers(RATES[0], RATES[1] + 1)),
                          int(rng.integers(PITCHES[0], PITCHES[1] + 1)), int(rng.integers(RANGES[0], RANGES[1] + 1)))
            if voice.speaker_id not in seen:  # distinct voices, distinct ids
                seen.add(voice.speaker_id)
                voices.append(voice)
        out[split] = voices
    return {s: out[s] for s in ("training", "validation", "testing")}


@lru_cache(maxsize=4)
def _resampler(rate: int) -> T.Resample:
    return T.Resample(rate, SAMPLE_RATE)  # the kernel of torchaudio.functional.resample, computed once


def render_clip(word: str, voice: Voice | NeuralVoice, rng: np.random.Generator) -> np.ndarray:
    """One 1 s, 16 kHz int16 clip: the word at a random offset, random gain, faint noise.

    The voice's tempo (and an espeak-ng voice's pitch) is jittered a little per clip, as a
    person never says two words alike; a word longer than ``MAX_SPEECH`` is re-spoken faster
    until it fits.
    """
    speech = _speak_neural(word, voice, rng) if isinstance(voice, NeuralVoice) else _speak_espeak(word, voice, rng)
    fade = np.minimum(1, np.minimum(np.arange(len(speech)), np.arange(len(speech))[::-1]) / FADE)
    speech *= fade * 10 ** (rng.uniform(-18, -2) / 20) / max(np.abs(speech).max(), 1e-4)  # peak -18..-2 dBFS
    clip = rng.standard_normal(CLIP_SAMPLES) * 10 ** (rng.uniform(-78, -66) / 20)  # (16000,)
    margin = min(MARGIN, (CLIP_SAMPLES - len(speech)) // 2)  # keep the word off the clip's edges
    start = int(rng.integers(margin, CLIP_SAMPLES - len(speech) - margin + 1))
    clip[start:start + len(speech)] += speech
    return to_pcm16(torch.from_numpy(clip)).numpy()


def _trim(speech: np.ndarray) -> np.ndarray:
    """``speech`` without the near-silence the synthesiser leaves before and after the word."""
    loud = np.flatnonzero(np.abs(speech) > 0.003 * np.abs(speech).max(initial=0))
    return speech[loud[0]:loud[-1] + 1] if len(loud) else speech


def _speak_espeak(word: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """``word`` spoken by an espeak-ng voice, jittered and fitted into ``MAX_SPEECH``: ``(N,)`` float at 16 kHz."""
    voice = replace(voice, rate=int(np.clip(voice.rate * rng.uniform(0.93, 1.07), 80, 450)),
                    pitch=int(np.clip(voice.pitch + rng.integers(-4, 5), 0, 99)))
    for _ in range(4):
        raw, rate = synthesize(word, voice)
        raw = _trim(raw)
        duration = len(raw) / rate
        if duration <= MAX_SPEECH or voice.rate == 450:
            break
        voice = replace(voice, rate=min(450, math.ceil(voice.rate * duration / (0.95 * MAX_SPEECH))))
    return _resampler(rate)(as_float(torch.from_numpy(raw))).numpy()[:CLIP_SAMPLES]  # (N,)


def _speak_neural(word: str, voice: NeuralVoice, rng: np.random.Generator) -> np.ndarray:
    """``word`` spoken by a neural voice, its tempo jittered, fitted into ``MAX_SPEECH``: ``(N,)`` float at 16 kHz."""
    ipa, tempo = phonemes(word, voice.accent), rng.uniform(0.93, 1.07)
    for _ in range(4):
        speech = _trim(speak_phonemes(ipa, voice, rng, tempo))
        duration = len(speech) / SAMPLE_RATE
        if duration <= MAX_SPEECH:
            break
        tempo *= 0.95 * MAX_SPEECH / duration
    return speech[:CLIP_SAMPLES]


def generate_corpus(root: str | Path, *, words=WORDS_V2, num_speakers: int = 500, val_speakers: int = 50,
                    test_speakers: int = 50, clips_per_speaker: int = 1, seed: int = 0,
                    noise_seconds: float = 60.0, accents=ACCENTS, variants=VARIANTS, neural_speakers: int = 0,
                    progress: bool = True, workers: int | None = None) -> Path:
    """Write a synthetic Speech Commands corpus under ``root`` once; later calls reuse it.

    The corpus is built in a hidden sibling folder (``atomic.staged_dir``: a killed run's is
    swept by the next) and put at ``root`` only when complete, with the marker
    ``.complete.json`` (the arguments) written last: an interrupted run leaves
    ``root`` as it was. An existing corpus whose marker holds the same arguments is returned
    untouched. Anything else in ``root`` (someone's files, a corpus made with other arguments,
    one without its marker) is refused and never replaced: it may be all the user has. Same
    arguments give byte-identical files.

    Args:
        root (str | Path): the corpus folder; it must be new, empty, or this very corpus.
        words (Sequence[str], optional): words to speak. (Default: ``WORDS_V2``, all 35)
        num_speakers (int, optional): speakers in all splits. (Default: ``500``)
        val_speakers (int, optional): speakers listed in ``validation_list.txt``. (Default: ``50``)
        test_speakers (int, optional): speakers listed in ``testing_list.txt``. (Default: ``50``)
        clips_per_speaker (int, optional): repetitions of each word per speaker. (Default: ``1``)
        seed (int, optional): seed of the voices, offsets, gains and noise. (Default: ``0``)
        noise_seconds (float, optional): length of each ``_background_noise_`` file. (Default: ``60``)
        accents, variants (Sequence[str], optional): voices to draw from. (Default: ``ACCENTS``, ``VARIANTS``)
        neural_speakers (int, optional): neural speakers (``speechrnn.data.neural_voice``) added to the
            training split, each speaking every word, in ``accents`` by turns. (Default: ``0``)
        progress (bool, optional): show a tqdm bar on a terminal (logs and pipes stay quiet). (Default: ``True``)
        workers (int, optional): processes that render clips side by side, for corpora of at least
            ``PARALLEL_MIN_CLIPS`` clips (a spawned process first spends seconds importing torch);
            the files are the same whatever their number. (Default: ``None``, one per CPU, at most
            ``MAX_WORKERS``)

    Returns:
        Path: ``root``.

    Raises:
        DatasetError: ``root`` holds anything but this corpus (the message says what differs), or
            ``words`` cannot be folder names.
    """
    root = Path(root)
    words = [str(w) for w in words]
    if not words or len(set(words)) != len(words) or any(not w or "/" in w or w[0] in "._" for w in words):
        raise DatasetError(f"words {words}: a synthetic corpus needs distinct words that can be folder names; "
                           "pass words without '/' that do not start with '.' or '_'")
    if clips_per_speaker < 1 or noise_seconds <= 0 or neural_speakers < 0:
        raise ValueError(f"need clips_per_speaker >= 1, noise_seconds > 0 and neural_speakers >= 0, got "
                         f"{clips_per_speaker}, {noise_seconds}, {neural_speakers}")
    params = dict(format=FORMAT, espeak=espeak_version(), words=words, num_speakers=num_speakers,
                  val_speakers=val_speakers, test_speakers=test_speakers, clips_per_speaker=clips_per_speaker,
                  seed=seed, noise_seconds=noise_seconds, accents=list(accents), variants=list(variants))
    if neural_speakers:  # only then: a corpus of espeak-ng voices alone keeps the marker it had
        params |= dict(neural_speakers=neural_speakers, neural_voice=MODEL, neural_noise=[NOISE_SIZE, NOISE_PER_ID])
    if _holds_corpus(root, params):
        return root
    speakers = sample_speakers(num_speakers, val_speakers, test_speakers, seed, accents, variants)
    speakers["training"] += sample_neural_voices(neural_speakers, seed, tuple(accents))
    jobs = [(split, voice, w, n) for split, voices in speakers.items() for voice in voices
            for w in words for n in range(clips_per_speaker)]
    with staged_dir(root) as stage:  # what a generator killed earlier left is swept; a live one's stage is kept
        (stage / BACKGROUND_NOISE_DIR).mkdir()
        for w in words:
            (stage / w).mkdir()
        clips = [(stage, seed, voice, word, n) for _, voice, word, n in jobs]
        workers = (workers or min(usable_cpus(), MAX_WORKERS)) if len(clips) >= PARALLEL_MIN_CLIPS else 1
        bar = dict(total=len(clips), desc=f"synthesising {root.name}", unit="clip",
                   disable=None if progress else True)  # None: on a terminal only
        if workers == 1:
            with torch_threads(1):  # a clip is too small to split: extra threads only spin, 5x slower on a busy CPU
                for _ in tqdm(map(_write_clip, clips), **bar):
                    pass
        else:  # spawned, not forked: a fork of a process whose OpenMP pool has run can hang in torch
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_one_thread) as pool:
                for _ in tqdm(pool.map(_write_clip, clips, chunksize=64), **bar):
                    pass
        for split in ("validation", "testing"):
            names = sorted(_clip_name(word, voice, n) for s, voice, word, n in jobs if s == split)
            (stage / f"{split}_list.txt").write_text("".join(f"{x}\n" for x in names))
        for kind, noise in noise_recordings(noise_seconds, seed):
            sf.write(stage / BACKGROUND_NOISE_DIR / f"{kind}.wav", noise, SAMPLE_RATE, subtype="PCM_16")
        (stage / "README.md").write_text(_readme(params, speakers))
        (stage / MARKER).write_text(json.dumps({"params": params, "clips": len(jobs)}, indent=1) + "\n")
    return root


def _clip_name(word: str, voice: Voice, n: int) -> str:
    return f"{word}/{voice.speaker_id}_nohash_{n}.wav"


def _write_clip(clip: tuple[Path, int, Voice, str, int]) -> None:
    """Render and write one clip of a corpus being built: (stage folder, seed, voice, word, repetition).

    A pure function of its arguments (the clip's random numbers are seeded by them), so clips
    may be written in any order, by any process."""
    stage, seed, voice, word, n = clip
    rng = np.random.default_rng([seed, int(voice.speaker_id, 16), zlib.crc32(word.encode()), n])
    sf.write(stage / _clip_name(word, voice, n), render_clip(word, voice, rng), SAMPLE_RATE, subtype="PCM_16")


def _one_thread() -> None:
    torch.set_num_threads(1)  # a worker's whole life: as torch_threads(1) above


def _holds_corpus(root: Path, params: dict) -> bool:
    """Whether ``root`` already is the corpus of ``params`` (True) or is free to build it in (False).

    Raises:
        DatasetError: ``root`` holds anything else; the message names what differs and the way out.
    """
    if not root.exists() or root.is_dir() and not any(root.iterdir()):
        return False
    try:
        found = dict(json.loads((root / MARKER).read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DatasetError(f"{root}: exists and is not a complete synthetic corpus (no readable {MARKER}), and it is "
                           "never overwritten; pass a new or empty data.root=... for the synthetic corpus, or "
                           f"data=folder data.root={root} to train on the clips it holds") from None
    if found == params:
        return True
    differences = "; ".join(_difference(key, found.get(key), params.get(key)) for key in {**params, **found}
                            if found.get(key) != params.get(key))
    raise DatasetError(f"{root}: holds a synthetic corpus made with other parameters ({differences}), and a corpus "
                       "is never replaced; pass a new data.root=..., or delete the folder yourself to rebuild it")


def _difference(key: str, there, asked) -> str:
    """One parameter's two values, briefly: lists by their size and the items that differ."""
    if not (isinstance(there, list) and isinstance(asked, list)):
        return f"{key}: {there} there, {asked} asked"
    added, dropped = [x for x in asked if x not in there], [x for x in there if x not in asked]
    changes = [f"{verb} [{', '.join(map(str, items[:5]))}{', ...' if len(items) > 5 else ''}]"
               for verb, items in (("adds", added), ("drops", dropped)) if items]
    return f"{key}: {len(there)} there, {len(asked)} asked ({', '.join(changes) or 'in another order'})"


def _readme(params: dict, speakers: dict[str, list[Voice]]) -> str:
    sizes = ", ".join(f"{sum(isinstance(x, Voice) for x in v)} {s}" for s, v in speakers.items())  # espeak-ng's
    return (f"{README_TITLE}\n\nNot real speech: a synthetic stand-in for Google Speech Commands written by "
            f"`speechrnn.data.synthetic.generate_corpus` with espeak-ng {params['espeak']}. {len(params['words'])} words x "
            f"{params['num_speakers']} speakers ({sizes}) x {params['clips_per_speaker']} clip(s), seed "
            f"{params['seed']}. A speaker is one espeak-ng voice (accent + variant, rate, pitch, range) and its id "
            "a hash of it; validation and test speakers use (accent, variant) pairs no training speaker uses. "
            + (f"The training split also has {params['neural_speakers']} neural speakers: espeak-ng's phonemes of "
               f"each accent spoken by the Piper voice {params['neural_voice']}, reshaped (vocal tract, tempo, "
               "voice noise) per speaker. " if params.get("neural_speakers") else "") +
            "Clips are 1 s of 16 kHz mono 16-bit PCM: the word at a random offset and gain over faint noise. "
            "`_background_noise_/` holds generated white, pink, brown, running-tap-like and mains-hum noise. "
            f"`{MARKER}` holds the arguments; the same arguments rebuild the same bytes.\n")


def synthetic_words(task: str, words: list[str] | None, unknown: bool = True) -> list[str]:
    """The words the embedded corpus speaks for a task: ``${synthetic_words:...}`` in ``conf/data/synthetic.yaml``.

    Args:
        task (str): ``kws12``, ``kws35`` or ``custom``.
        words (list[str] | None): the keywords of a ``custom`` task.
        unknown (bool, optional): the task has an ``_unknown_`` class. (Default: ``True``)

    Returns:
        list[str]: the 35 words of Speech Commands v0.02, or a custom task's keywords followed,
        when it has ``_unknown_``, by the Speech Commands words not among them: fillers from which
        the model learns to reject other words. (``_silence_`` is cut from the corpus's noise.)
    """
    if task != "custom" or not words:  # custom without words: task_labels says what is missing
        return list(WORDS_V2)
    keywords = [str(w) for w in words]
    return keywords + ([w for w in WORDS_V2 if w not in keywords] if unknown else [])


def synthetic_dir(task: str, words: list[str] | None, unknown: bool = True) -> str:
    """Folder name of the embedded corpus for a task: ``${synthetic_dir:...}`` in ``conf/data/synthetic.yaml``.

    ``synthetic`` for kws12 and kws35; a custom task's corpus gets its own folder,
    ``synthetic-<keywords joined by ->`` (``-only`` appended when it has no ``_unknown_`` fillers),
    or ``synthetic-<hash of its words>`` when that would be longer than 64 characters, so it
    never meets the default corpus (a corpus is never replaced, see ``synth.generate_corpus``).
    Arguments as for ``synthetic_words``.
    """
    if task != "custom" or not words:
        return "synthetic"
    name = "-".join(["synthetic", *map(str, words)] + ([] if unknown else ["only"]))
    if len(name) > 64:
        spoken = "\n".join(synthetic_words(task, words, unknown))
        name = f"synthetic-{hashlib.sha1(spoken.encode()).hexdigest()[:10]}"
    return name
