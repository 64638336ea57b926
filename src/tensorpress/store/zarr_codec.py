"""The zarr v3 array→bytes codec ``tensorpress``: each chunk is one tensorpress blob.

Metadata in an array's ``zarr.json``::

    {"name": "tensorpress", "configuration": {"spec": <JSON config of the codec or chain>}}

The codec is found by zarr through the ``zarr.codecs`` entry point, so plain ``zarr.open_array`` reads
tensorpress arrays in a process that never imported tensorpress. Importing this module also registers it.

zarr 3.1 has no bfloat16 or fp8 data type. :mod:`tensorpress.store.container` stores such tensors as zarr
arrays of their unsigned bit pattern (``uint16`` / ``uint8``) whose chunk blobs keep the real dtype; this
codec decodes such a blob to its bit pattern, so plain zarr reads the bits and a container restores the type.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr.registry
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from ..core.codec import Codec, build, config_of
from ..core.dtypes import dtype_to_str
from ..core.encoded import Encoded
from ..core.errors import BlobError, ConfigError

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.common import JSON

CODEC_NAME = "tensorpress"


@dataclass(frozen=True)
class TensorpressCodec(ArrayBytesCodec):
    """zarr array→bytes codec running a tensorpress codec (or chain) on every chunk.

    ``spec`` is a spec string (``"quant(bits=4) | zstd"``), a JSON configuration or a :class:`Codec`.
    """

    is_fixed_size = False

    spec: Codec

    def __init__(self, *, spec: Any = "raw") -> None:
        object.__setattr__(self, "spec", build(spec))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME)
        if set(configuration) != {"spec"}:
            raise ConfigError(
                f'tensorpress zarr codec: expected configuration {{"spec": …}}, got {configuration!r}'
            )
        return cls(spec=configuration["spec"])

    def to_dict(self) -> dict[str, JSON]:
        return {"name": CODEC_NAME, "configuration": {"spec": config_of(self.spec)}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: ChunkGrid) -> None:
        native = dtype.to_native_dtype()
        if not isinstance(native, np.dtype) or native.kind not in "biuf":
            raise ConfigError(
                f"the tensorpress zarr codec stores bool, integer and floating point arrays, got {native}; "
                "use zarr's own codecs for other data"
            )

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-sized output

    # --- the work, written once; the async methods run it in a worker thread as zarr's own codecs do -----
    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        blob = self.spec.encode(chunk_array.as_numpy_array()).to_buffer()
        return chunk_spec.prototype.buffer.from_array_like(blob)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        enc = Encoded.from_bytes(chunk_bytes.as_numpy_array().data)
        data = as_chunk(enc.decode(), chunk_spec.shape, chunk_spec.dtype.to_native_dtype())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


def as_chunk(data: np.ndarray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A decoded chunk as the zarr array's chunk ``shape`` and ``dtype``.

    Byte order is converted; a bfloat16/fp8 blob in an unsigned array of the same width is viewed as its bits.
    """
    if tuple(data.shape) != tuple(shape):
        raise BlobError(f"chunk blob holds shape {tuple(data.shape)}, but the zarr chunk shape is {tuple(shape)}")
    if data.dtype == dtype:
        return data
    if data.dtype.kind == "V" and dtype.kind == "u" and data.dtype.itemsize == dtype.itemsize:
        return data.view(dtype)
    if data.dtype.newbyteorder("=") == dtype.newbyteorder("="):
        return data.astype(dtype)
    raise BlobError(
        f"chunk blob holds {dtype_to_str(data.dtype)} data, but the zarr array is {dtype}; "
        "the array's metadata and its chunks do not belong together"
    )


zarr.registry.register_codec(CODEC_NAME, TensorpressCodec)
