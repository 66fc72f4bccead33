"""Seeds derived from names, so every sampled call in a run has its own seed that depends on what the call is (which
run, question, sample and step), never on timing or on what else shares the batch."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts; the same parts always give the same seed."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
