"""Reading raw stack values, and the one error format every section's reader uses."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

NAMESPACE = "speech"


class ConfigError(ValueError):
    """A stack's configuration is missing a value or holds one that is not allowed."""


class Reader:
    """Reads raw values for one stack and formats every error the same way."""

    def __init__(self, stack: str, raw: Mapping[str, Any]) -> None:
        self.stack = stack
        self.raw = raw

    def fail(self, key: str, value: Any, allowed: str) -> ConfigError:
        shown = "<missing>" if value is None else json.dumps(value)
        return ConfigError(f"{key} = {shown} {allowed} (Pulumi.{self.stack}.yaml)")

    def get(self, name: str, default: Any = None) -> Any:
        value = self.raw.get(f"{NAMESPACE}:{name}", default)
        if isinstance(value, str) and value[:1] in "[{":
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise self.fail(f"{NAMESPACE}:{name}", value, f"is not valid JSON/YAML ({exc.msg})") from exc
        return value

    def require(self, name: str, allowed: str) -> Any:
        value = self.get(name)
        if value is None or value == "":
            raise self.fail(f"{NAMESPACE}:{name}", None, f"is required: {allowed}")
        return value

    def string(self, name: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.require(name, allowed)
        if not isinstance(value, str) or not pattern.match(value):
            raise self.fail(f"{NAMESPACE}:{name}", value, f"is not allowed: {allowed}")
        return value

    def integer(self, key: str, value: Any, minimum: int, maximum: int) -> int:
        # YAML gives ints; Pulumi's wire form gives strings. bool is an int subclass and never a size.
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(key, value, f"must be a whole number from {minimum} to {maximum}")
        return value

    def number(self, key: str, value: Any, above: float, at_most: float) -> float:
        """A number in (``above``, ``at_most``]: a threshold or a fraction, never a bool."""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # a non-number keeps its text for the error message
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not above < value <= at_most:
            raise self.fail(key, value, f"must be a number above {above:g} and at most {at_most:g}")
        return float(value)

    def unknown_keys(self, allowed: set[str]) -> None:
        for full_key in sorted(self.raw):
            namespace, _, name = full_key.partition(":")
            if namespace == NAMESPACE and name not in allowed:
                raise self.fail(
                    full_key, self.raw[full_key], f"is not a known key; known keys: {', '.join(sorted(allowed))}"
                )
