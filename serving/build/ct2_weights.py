"""Read a CTranslate2 ``model.bin`` into numpy arrays, so the export step needs no ctranslate2 install.

The layout (binary version 6, little-endian, as written by ``ctranslate2.specs.ModelSpec._serialize``)::

    u32 binary_version
    str spec_name                 (u16 length including the trailing NUL, bytes, NUL)
    u32 spec_revision
    u32 variable_count
    variable_count x { str name; u8 rank; rank x u32 dim; u8 dtype; u32 byte_size; byte_size bytes }
    u32 alias_count
    alias_count x { str alias; str target }

Only the dtypes a converted Whisper model uses are accepted; anything else is refused by name rather than
misread, because a silently misread weight would only show up as garbage transcripts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

SUPPORTED_BINARY_VERSION = 6

# ctranslate2::DataType enum values.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass(frozen=True)
class Ct2Model:
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]

    def scalar(self, name: str) -> int:
        """A rank-0 attribute such as ``encoder/num_heads``."""
        value = self.variables[name]
        if value.ndim != 0:
            raise Ct2FormatError(f"{name} has shape {value.shape}; expected a scalar")
        return int(value)


class _Reader:
    def __init__(self, data: bytes, origin: str) -> None:
        self._data = data
        self._origin = origin
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self._data):
            raise Ct2FormatError(f"{self._origin} is truncated at byte {self.offset}")
        (value,) = struct.unpack_from("<" + fmt, self._data, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        length = self.unpack("H")
        raw = self._data[self.offset : self.offset + length]
        if length == 0 or len(raw) != length or raw[-1] != 0:
            raise Ct2FormatError(f"{self._origin}: malformed string at byte {self.offset}")
        self.offset += length
        return raw[:-1].decode("utf-8")

    def raw(self, size: int) -> bytes:
        chunk = self._data[self.offset : self.offset + size]
        if len(chunk) != size:
            raise Ct2FormatError(f"{self._origin} is truncated at byte {self.offset}")
        self.offset += size
        return chunk


def parse_ct2_model(data: bytes, origin: str) -> Ct2Model:
    """Parse the bytes of a ``model.bin`` (``origin`` names it in errors).

    Aliases become extra names pointing at the same array: Whisper ties its output projection to the embedding.
    """
    reader = _Reader(data, origin)
    version = reader.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise Ct2FormatError(
            f"{origin} has CTranslate2 binary version {version}; only {SUPPORTED_BINARY_VERSION} is supported"
        )
    spec_name = reader.string()
    spec_revision = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        dtype_id = reader.unpack("B")
        if dtype_id not in _DTYPES:
            raise Ct2FormatError(f"{origin}: variable {name} has dtype id {dtype_id}; supported ids: {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype_id]
        size = reader.unpack("I")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected:
            raise Ct2FormatError(
                f"{origin}: variable {name} holds {size} bytes; shape {shape} of {dtype} needs {expected}"
            )
        variables[name] = np.frombuffer(reader.raw(size), dtype=dtype).reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise Ct2FormatError(f"{origin}: alias {alias} points at missing variable {target}")
        variables[alias] = variables[target]
    if reader.offset != len(data):
        raise Ct2FormatError(f"{origin} has {len(data) - reader.offset} trailing bytes after the aliases")
    return Ct2Model(spec_name=spec_name, spec_revision=spec_revision, variables=variables)
