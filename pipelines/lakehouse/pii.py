"""Pseudonymization of personal data after bronze.

Identifiers (names, emails, phones, addresses, dates of birth) become keyed-hash tokens: an
HMAC-SHA256 over a normalised value, computed inside Spark so it stays vectorised. Equal values
still give equal tokens (joins and exact matching keep working) but a token cannot be reversed
or recomputed without the key. Free text (contact-centre notes) is redacted instead, because a
hash of free text is useless and the text itself is valuable.

The key comes from the environment variable named in config (``ingest.pii_key_env``); the
local target's default key is for development only.
"""

from __future__ import annotations

import functools
import hashlib
import os

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.errors import ConfigError

_BLOCK = 64  # SHA-256 block size in bytes

# How each PII field is normalised before hashing, so that trivial variations give one token.
_NORMALISE = {
    "email": lambda c: F.lower(F.trim(c)),
    "phone": lambda c: F.regexp_replace(c, r"[^0-9]", ""),
    "postcode": lambda c: F.upper(F.regexp_replace(c, r"\s", "")),
}
_REDACT_PATTERNS = (
    (r"[\w.+-]+@[\w-]+\.[\w.]+", "[email]"),
    (r"\+?\d[\d \-]{6,}\d", "[number]"),
    # UK postcodes (the outward code alone too, "SW1A"): an address in a note is a person's
    (r"\b[A-Z]{1,2}[0-9][A-Z0-9]?(?: ?[0-9][A-Z]{2})?\b", "[postcode]"),
    # a capitalised word after a lower-case word or a comma is a proper noun (a name, a street, a
    # town) in agents' notes; sentence-initial words are matched against given names below
    (r"(?<=[a-z0-9,;:)] )[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?\b", "[name]"),
)
FREE_TEXT_FIELDS = frozenset({"note", "message"})  # contact-centre notes, app-chat messages


def pii_key(env_var: str, default: str | None = None) -> bytes:
    """The pseudonymization key: from ``env_var``, else the configured development default.

    With neither, ingestion refuses to start rather than hash PII with a guessable key.
    """
    value = os.environ.get(env_var) or default
    if not value:
        raise ConfigError(
            f"no pseudonymization key: set the environment variable {env_var} "
            "(or ingest.pii_key_default in conf/ for local development only)"
        )
    return value.encode("utf-8")


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\x00")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """Reference HMAC in Python (tests check the Spark expression against it)."""
    import hmac

    return hmac.new(key, message, hashlib.sha256).hexdigest()


def token(column: Column | str, key: bytes, field: str | None = None) -> Column:
    """HMAC-SHA256 token of a string column (null stays null), as lowercase hex."""
    col = F.col(column) if isinstance(column, str) else column
    normalise = _NORMALISE.get(field or "", lambda c: F.lower(F.trim(c)))
    message = F.encode(normalise(col.cast("string")), "UTF-8")
    inner_pad, outer_pad = _hmac_pads(key)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.when(col.isNull(), F.lit(None).cast("string")).otherwise(
        F.sha2(F.concat(F.lit(outer_pad), inner), 256)
    )


def redact(column: Column | str) -> Column:
    """Free text with email addresses, long digit runs (phones, card numbers), postcodes and
    names masked: proper nouns inside a sentence, and a sentence's first word when it is a given
    name. A name missing from the given-name list that opens a sentence stays (measured in
    bench/README.md); over-masking a word that is also a name ("Will") is the price of the rest."""
    col = F.col(column) if isinstance(column, str) else column
    for pattern, replacement in _REDACT_PATTERNS:
        col = F.regexp_replace(col, pattern, replacement)
    return F.regexp_replace(col, _sentence_initial_names(), "$1[name]")


@functools.cache
def given_names() -> frozenset[str]:
    """Given names, title-cased: the US census lists shipped in the ``names`` package."""
    from importlib.resources import files

    out: set[str] = set()
    for part in ("dist.female.first", "dist.male.first"):
        for line in files("names").joinpath(part).read_text().splitlines():
            if line.strip():
                out.add(line.split()[0].title())
    return frozenset(out)


@functools.cache
def _sentence_initial_names() -> str:
    alternatives = "|".join(sorted(given_names(), key=len, reverse=True))
    return rf"(^|[.!?;]\s+)(?:{alternatives})\b"


def pseudonymize(df: DataFrame, pii_fields: tuple[str, ...], key: bytes) -> DataFrame:
    """Replace each PII column ``x`` by ``x_token`` (identifiers) or a redacted ``x`` (free text).

    Names also get a token of their Soundex code, so identity resolution can match spelling
    variants without ever seeing the name.
    """
    for name in pii_fields:
        if name not in df.columns:
            continue
        if name in FREE_TEXT_FIELDS:
            df = df.withColumn(name, redact(name))
            continue
        df = df.withColumn(f"{name}_token", token(F.col(name), key, name))
        if name in ("first_name", "last_name"):
            df = df.withColumn(f"{name}_soundex_token", token(F.soundex(F.col(name)), key))
        df = df.drop(name)
    return df
