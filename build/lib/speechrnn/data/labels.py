"""Label vocabularies of Google Speech Commands: the one place the word lists live.

v0.01 has 30 words, v0.02 adds 5 more (35). The standard 12-class task ("kws12")
keeps 10 command words and folds everything else into ``_unknown_``, plus a
``_silence_`` class cut from background noise.
"""

from __future__ import annotations

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

WORDS_V1 = COMMANDS + (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
)
WORDS_V2 = WORDS_V1 + ("backward", "forward", "follow", "learn", "visual")

KWS12 = COMMANDS + (SILENCE, UNKNOWN)


def words_for_version(version: str) -> tuple[str, ...]:
    """All words of a Speech Commands release ("v0.01" or "v0.02")."""
    versions = {"v0.01": WORDS_V1, "v0.02": WORDS_V2}
    if version not in versions:
        raise ValueError(f"unknown Speech Commands version {version!r}: expected one of {sorted(versions)}")
    return versions[version]
