"""Content-hashed identities (OpenLTH style): a path is a hash of exactly what changes the result."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(obj: Any, length: int = 16) -> str:
    """Stable hash of JSON-able settings; key order does not matter."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
