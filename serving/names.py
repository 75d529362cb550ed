"""Model names and versions: one checked type wherever they enter the server.

A name or version becomes a directory in the model cache (``<cache>/<name>/<version>``) and a key segment in the
store (``models/<name>/<version>/``), so it must be exactly one harmless path segment: ``.`` or ``..`` would make the
cache client verify, and then delete, the directory above the version (the live model, or the whole cache). Names
therefore start with a letter or digit (which also keeps them apart from the client's hidden ``.<version>.*``
staging directories), hold no separators, and are short enough to be a label, a key and a file name everywhere.
Settings, the reload request, store listings and manifests all check with :func:`checked_name`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_NAME_LENGTH = 64
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def checked_name(value: str, what: str = "model name or version") -> str:
    """``value`` when it is a safe name, else ``ValueError`` saying what is accepted."""
    if not is_valid_name(value):
        shown = value[:80] if isinstance(value, str) else value
        raise ValueError(
            f"{what} {shown!r} is not accepted; use 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. whisper-base, 1.1.0)"
        )
    return value


ModelName = Annotated[str, AfterValidator(lambda value: checked_name(value, "model name"))]
ModelVersion = Annotated[str, AfterValidator(lambda value: checked_name(value, "model version"))]
