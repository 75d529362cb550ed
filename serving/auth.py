"""Optional API-key authentication for the ASR and model-admin routes.

The deployment holds only SHA-256 digests of keys (``SPEECH_AUTH__API_KEY_HASHES`` or a mounted secret file), so
a leaked environment or config map gives nobody a usable key. A client sends its key as ``Authorization: Bearer
<key>`` or ``X-API-Key: <key>``. Health, readiness and metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.datastructures import Headers

UNAUTHORIZED_DETAIL = "missing or invalid API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class ApiKeyVerifier:
    """Checks presented keys against the configured digests; with no digests configured, auth is off."""

    def __init__(self, key_hashes: frozenset[str]) -> None:
        self._digests = tuple(bytes.fromhex(h) for h in sorted(key_hashes))

    @property
    def is_enabled(self) -> bool:
        return bool(self._digests)

    def is_allowed(self, headers: Headers) -> bool:
        """Whether the request may proceed: auth is off, or it carries a key whose digest is configured."""
        if not self.is_enabled:
            return True
        key = key_from(headers)
        if key is None:
            return False
        presented = hashlib.sha256(key.encode()).digest()
        # Compare against every digest, without stopping at a match, so timing reveals nothing about which.
        matches = [hmac.compare_digest(presented, digest) for digest in self._digests]
        return any(matches)


def key_from(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None
