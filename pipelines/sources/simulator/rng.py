"""Seeded randomness: one independent stream per (seed, component, day).

Every random draw in the simulator comes from a stream named by integers, never from global
state, so adding a draw in one component cannot change the data of another and the same seed
always gives the same bytes.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

# Component keys: stable integers so streams never depend on import or call order.
POPULATION = 1
IDENTITIES = 2
LIFE_EVENTS = 3
DAY = 10
FAULTS = 20
SNAPSHOT_FAULTS = 21
CLOSED_LOOP = 30
POLICY = 31
TEXT = 40  # what people say (situations, intents, words): apart from what they do


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for ``seed`` and a path of component keys."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def stable_hash64(values: list[str]) -> np.ndarray:
    """A 64-bit hash of each string that does not depend on PYTHONHASHSEED."""
    out = np.empty(len(values), dtype=np.uint64)
    for i, v in enumerate(values):
        out[i] = int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
    return out


def hash_uniform(seed: int, keys: np.ndarray, salt: int) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, key, salt), via splitmix64.

    The closed loop uses this so a decision's response does not depend on which other
    decisions were submitted with it or on their order.
    """
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) ^ np.uint64(
            (int(seed) * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@functools.cache
def _affine(modulus: int, seed: int, salt: int) -> tuple[int, int]:
    r = stream(seed, 99, salt)
    while True:
        a = int(r.integers(modulus // 3, modulus - 1))
        if np.gcd(a, modulus) == 1:
            return a, int(r.integers(0, modulus))


def permuted_ids(counter: np.ndarray, modulus: int, seed: int, salt: int) -> np.ndarray:
    """Unique, random-looking numbers in [0, modulus) for distinct counters (an affine bijection).

    Ids look like a bank's (not 1, 2, 3) yet never collide, and need no set of used ids.
    """
    counter = np.asarray(counter, dtype=np.int64)
    if modulus > 3_000_000_000 or (len(counter) and int(counter.max()) >= modulus):
        raise ValueError("permuted_ids: modulus too large for int64 arithmetic or too small for counter")
    a, b = _affine(modulus, seed, salt)
    return (counter * a + b) % modulus
