"""API-key authentication: optional transcription keys, and separate admin keys for the model-admin routes.

The deployment holds only SHA-256 digests of keys (``SPEECH_AUTH__API_KEY_HASHES``, ``__ADMIN_KEY_HASHES`` or
mounted secret files), so a leaked environment or config map gives nobody a usable key. A client sends its key as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; gRPC calls send the same names as metadata, and a
browser's WebSocket, which cannot set headers, offers it as a subprotocol (``contract.service``'s
``STREAM_KEY_SUBPROTOCOL_PREFIX``). Health, readiness and metrics stay open for probes and scrapers;
``serving/gate.py`` decides which keys a path needs before any body is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

from contract.service import STREAM_KEY_SUBPROTOCOL_PREFIX, STREAM_SUBPROTOCOL

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

LOCAL_TENANT = "local"  # the one tenant of a server without keys

UNAUTHORIZED_DETAIL = "missing or invalid API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
STREAM_UNAUTHORIZED_DETAIL = (
    f"{UNAUTHORIZED_DETAIL}, or from a browser as the WebSocket subprotocols '{STREAM_SUBPROTOCOL}' and "
    f"'{STREAM_KEY_SUBPROTOCOL_PREFIX}<base64url of the key, unpadded>'"
)
ADMIN_UNAUTHORIZED_DETAIL = (
    "missing or invalid admin key (transcription keys do not work here); send it as 'Authorization: Bearer <key>' "
    "or 'X-API-Key: <key>'"
)
ADMIN_OFF_DETAIL = (
    "administrative routes are off because no admin key is configured; set SPEECH_AUTH__ADMIN_KEY_HASHES "
    "(or SPEECH_AUTH__ADMIN_KEY_HASHES_FILE) to SHA-256 digests of admin keys to turn them on"
)


class ApiKeyVerifier:
    """Checks presented keys against the configured digests; with no digests configured, auth is off.

    ``jurisdictions`` gives the home jurisdiction of the keys that have one (digest hex -> code).
    """

    def __init__(self, key_hashes: frozenset[str], jurisdictions: Mapping[str, str] | None = None) -> None:
        self._digests = tuple(bytes.fromhex(h) for h in sorted(key_hashes))
        self._jurisdictions = {bytes.fromhex(h): code for h, code in (jurisdictions or {}).items()}

    @property
    def is_enabled(self) -> bool:
        return bool(self._digests)

    def is_allowed(self, headers: Mapping[str, str]) -> bool:
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

    def home_jurisdiction(self, headers: Mapping[str, str]) -> str | None:
        """The home jurisdiction of the presented key (call after :meth:`is_allowed`), or None when it has none."""
        key = key_from(headers)
        return None if key is None else self._jurisdictions.get(hashlib.sha256(key.encode()).digest())

    def tenant_of(self, headers: Mapping[str, str]) -> str:
        """Whose data a request touches (call after :meth:`is_allowed`): the SHA-256 hex of its key, which the
        deployment already holds, or ``LOCAL_TENANT`` for every caller when auth is off."""
        key = key_from(headers)
        if not self.is_enabled or key is None:
            return LOCAL_TENANT
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def jurisdictions(self) -> set[str]:
        """Every jurisdiction some key names."""
        return set(self._jurisdictions.values())


def key_from(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = headers.get("x-api-key", "").strip()
    return key or _key_from_subprotocols(headers)


def _key_from_subprotocols(headers: Mapping[str, str]) -> str | None:
    """The key a browser offered as a WebSocket subprotocol; None when there is none or it does not decode."""
    for offered in headers.get("sec-websocket-protocol", "").split(","):
        name = offered.strip()
        if not name.startswith(STREAM_KEY_SUBPROTOCOL_PREFIX):
            continue
        encoded = name.removeprefix(STREAM_KEY_SUBPROTOCOL_PREFIX)
        if not _BASE64URL.fullmatch(encoded):
            return None
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return key.strip() or None
    return None
