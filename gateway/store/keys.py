"""The cache keys of credentials: a SHA-256 of the token, never the token itself.

A module of their own so that the compiled build compiles them: :mod:`gateway.store.cache`
(which re-exports them, and whose docstring says how keys are built) is not compiled
(``gateway/compiled.py`` says why), and every request whose session key is not at hand
computes one. Interpreted, the call and the key's formatting cost about as much as the SHA-256.
"""

from __future__ import annotations

from hashlib import sha256

__all__ = ["digest_key", "token_key"]


def token_key(kind: str, token: str) -> str:
    """The cache key of a credential: ``kind`` and the SHA-256 of the token, never the token."""
    return digest_key(kind, sha256(token.encode()).hexdigest())


def digest_key(kind: str, digest: str) -> str:
    """The cache key of a credential known only by its SHA-256 (lower-case hex)."""
    return kind + ":" + digest
