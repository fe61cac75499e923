"""Duplicate detection in memory proportional to what was kept.

Exact duplicates: the text is normalised (NFKC, case folded, only letters kept, so that copies that
differ in case, punctuation, digits or spacing match) and hashed to 64 bits.
Near duplicates (paragraphs only): a MinHash signature (datasketch's values, computed with numpy) over word 3-grams
is cut into LSH bands sized for the Jaccard threshold; two paragraphs sharing any band are near duplicates.
Seen keys go into Bloom filters (rbloom) instead of sets, about 34 bytes per paragraph; the price is a small chance
(about 1e-4 per lookup) of dropping a unique text. The filters grow with the keys they hold (a scalable Bloom
filter), so a small wiki does not pay for a large one's and a large one does not overflow a guessed size.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import cached_property

import numpy as np
from rbloom import Bloom

_NOT_A_LETTER = re.compile(r"[\W\d_]+")
_WORD = re.compile(r"\w+")
_FALSE_POSITIVE_RATE = 1e-4
_GROWTH = 2  # each new filter holds twice the last: memory at most twice the keys' share, few filters to ask
_TIGHTENING = 0.5  # ...and its false-positive rate is half the last's, so the rates sum to at most _FALSE_POSITIVE_RATE
_SHINGLE_WORDS = 3
# MurmurHash3's 32-bit finalizer (datasketch's _fmix): (shift, multiplier) twice, then a last shift.
_FMIX32_STEPS = ((np.uint32(16), np.uint32(0x85EBCA6B)), (np.uint32(13), np.uint32(0xC2B2AE35)))
_FMIX32_LAST_SHIFT = np.uint32(16)


def normalise(text: str) -> str:
    """The letters of `text`, NFKC-normalised and case folded; equal for trivially different copies."""
    return _NOT_A_LETTER.sub("", unicodedata.normalize("NFKC", text).casefold())


def _hash64(data: bytes) -> int:
    # Signed, so that the keys also fit an int64 column; deterministic across processes, unlike hash().
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def exact_key(text: str) -> int:
    """64-bit hash of the normalised text."""
    return _hash64(normalise(text).encode())


class NearDuplicateKeys:
    """LSH band keys of a text's MinHash signature; equal keys mean Jaccard similarity near the threshold."""

    def __init__(self, threshold: float, num_perm: int = 128) -> None:
        self.threshold = threshold
        self.num_perm = num_perm

    @cached_property
    def _bands(self) -> tuple[int, int]:
        return lsh_bands(self.threshold, self.num_perm)

    @cached_property
    def _permutations(self) -> tuple[np.ndarray, np.ndarray]:
        # datasketch's affine32 permutations for seed 1 (a odd): drawn here because importing datasketch imports
        # scipy, 0.8 s of every run. RandomState's stream is frozen by numpy, so the values cannot change.
        draw = np.random.RandomState(1)
        a = draw.randint(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = draw.randint(0, 1 << 32, self.num_perm, dtype=np.uint32)
        return a, b

    @property
    def band_count(self) -> int:
        return self._bands[0]

    def signature(self, text: str) -> np.ndarray | None:
        """The MinHash signature of the text's word 3-grams, equal to datasketch's `MinHash(seed=1,
        scheme="affine32").update_batch` but computed for all 3-grams at once; None if there is no 3-gram."""
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        shingles = {" ".join(gram) for gram in zip(*(words[start:] for start in range(_SHINGLE_WORDS)), strict=False)}
        if not shingles:
            return None
        # datasketch's hash of a 3-gram (sha1_hash32) is the first 4 of the 20 bytes of its SHA-1: every 5th uint32.
        digests = b"".join([hashlib.sha1(gram).digest() for gram in map(str.encode, shingles)])
        hashed = np.frombuffer(digests, "<u4")[:: hashlib.sha1().digest_size // 4]
        # Then datasketch's MurmurHash3 pre-mix and its permutations a * h + b (mod 2^32).
        for shift, multiplier in _FMIX32_STEPS:
            hashed = (hashed ^ (hashed >> shift)) * multiplier
        hashed = hashed ^ (hashed >> _FMIX32_LAST_SHIFT)
        a, b = self._permutations
        return (hashed[:, np.newaxis] * a + b).min(axis=0)

    def keys(self, text: str) -> list[int]:
        """One key per band; [] for texts too short to have a shingle."""
        signature = self.signature(text)
        if signature is None:
            return []
        bands, rows = self._bands
        values = signature[: bands * rows].astype(np.uint64).reshape(bands, rows)
        return [_hash64(bytes([band]) + values[band].tobytes()) for band in range(bands)]


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands x rows minimising the false positive plus false negative probability at the threshold: datasketch's
    `MinHashLSH` optimiser (equal weights, the first minimum), without its scipy import. The probabilities are
    integrals of polynomials of degree bands * rows <= num_perm, which Gauss-Legendre quadrature with
    num_perm // 2 + 1 nodes integrates exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(bands: int, rows: int, low: float, high: float) -> float:
        """The integral of P(two texts of similarity s share a band) over [low, high]."""
        half = (high - low) / 2
        similarity = half * nodes + (low + high) / 2
        return float(half * (weights * (1 - (1 - similarity**rows) ** bands)).sum())

    best, best_error = (0, 0), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = integral(bands, rows, 0.0, threshold)
            false_negative = (1.0 - threshold) - integral(bands, rows, threshold, 1.0)
            if (error := (false_positive + false_negative) / 2) < best_error:
                best, best_error = (bands, rows), error
    return best


class SeenFilter:
    """A set of 64-bit keys that answers "seen before?" and remembers the key in one step: Bloom filters of growing
    size, a new one (twice the last's capacity, half its false-positive rate) each time the newest is full.
    Keys are counted once however often they are added, so re-adding the same keys rebuilds the same filters."""

    def __init__(self, capacity: int) -> None:
        self._filters: list[Bloom] = []
        self._next_capacity, self._next_rate = max(capacity, 1000), _FALSE_POSITIVE_RATE * (1 - _TIGHTENING)
        self._room = 0  # keys the newest filter can still take at its rate

    def __contains__(self, key: int) -> bool:
        return any(key in bloom for bloom in self._filters)

    def check_and_add(self, keys: list[int]) -> bool:
        """True if any of `keys` was seen before; all of them are remembered either way."""
        new = [key for key in keys if key not in self]
        for key in new:
            if not self._room:
                self._filters.append(Bloom(self._next_capacity, self._next_rate))
                self._room = self._next_capacity
                self._next_capacity, self._next_rate = self._next_capacity * _GROWTH, self._next_rate * _TIGHTENING
            self._filters[-1].add(key)
            self._room -= 1
        return len(new) < len(keys)

    @property
    def size_in_bytes(self) -> int:
        return sum(bloom.size_in_bits for bloom in self._filters) // 8


EXACT_DUPLICATE, NEAR_DUPLICATE = "paragraphs_exact", "paragraphs_near"  # as the manifest counts them


class Deduplicator:
    """What one run has seen: paragraphs by exact key and by near-duplicate band keys, sentences by exact key. A
    build and `lm2vec data merge` decide alike by asking it in the same order."""

    def __init__(self, capacity: int, near_duplicate_threshold: float) -> None:
        self._near = NearDuplicateKeys(near_duplicate_threshold) if near_duplicate_threshold else None
        self._paragraphs = SeenFilter(capacity)
        self._bands = SeenFilter(capacity * self._near.band_count) if self._near else None
        self._sentences = SeenFilter(capacity * 4)  # Wikipedia has 3-4 sentences per paragraph

    def keys(self, paragraph: str) -> tuple[int, list[int]]:
        """The paragraph's exact key and its band keys ([] with near-duplicate removal off)."""
        return exact_key(paragraph), self._near.keys(paragraph) if self._near else []

    def paragraph(self, exact: int, near: list[int]) -> str | None:
        """None for a new paragraph, else EXACT_DUPLICATE or NEAR_DUPLICATE. Its keys are remembered either way
        (the band keys once it is not an exact duplicate): a dropped paragraph's bands block the next near copy."""
        if self._paragraphs.check_and_add([exact]):
            return EXACT_DUPLICATE
        if near and self._bands.check_and_add(near):
            return NEAR_DUPLICATE
        return None

    def sentence(self, key: int) -> bool:
        """Whether the sentence was seen before; it is remembered either way."""
        return self._sentences.check_and_add([key])
