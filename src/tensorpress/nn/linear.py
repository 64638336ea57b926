"""``CompressedLinear``: a ``torch.nn.Linear`` whose weight stays compressed between forwards.

The module keeps the weight's :class:`~tensorpress.Encoded` (the packed parts exactly as stored in the
container, no decoded copy) and, on each forward, decodes it through the kernel dispatch
(:func:`tensorpress.decode`, which picks the fastest registered ``decode`` kernel) and computes
``y = x @ W.T + b`` in float32 with ``torch.nn.functional.linear``, the operation ``nn.Linear`` itself uses.
So a model whose layers are ``CompressedLinear`` gives bit for bit the outputs of the same model with the
decoded weights in plain ``nn.Linear`` layers. Fused kernels that never materialise ``W`` come later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.encoded import Encoded
from ..core.errors import InputError


class CompressedLinear(torch.nn.Module):
    """``y = x @ W.T + b`` with ``W`` (out_features × in_features) held as an :class:`Encoded`.

    ``bias``: a float tensor of ``out_features`` or None. Inputs of any float dtype are computed in float32
    and the result is cast back to the input's dtype.
    """

    def __init__(self, encoded: Encoded, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(encoded, Encoded) or len(encoded.shape) != 2:
            got = encoded.shape if isinstance(encoded, Encoded) else type(encoded).__name__
            raise InputError(f"CompressedLinear needs the Encoded of a 2-d (out, in) weight, got {got}")
        self.encoded = encoded
        self.out_features, self.in_features = encoded.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise InputError(f"bias of shape {tuple(bias.shape)} does not fit {self.out_features} outputs")
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, spec: Any) -> CompressedLinear:
        """Compress ``linear``'s weight with ``spec`` (a spec string or codec)."""
        import tensorpress

        weight = linear.weight.detach().cpu().float().numpy()
        bias = None if linear.bias is None else linear.bias.detach().cpu()
        return cls(tensorpress.encode(weight, spec), bias)

    def weight_array(self) -> np.ndarray:
        """The decoded weight, float32 (out_features, in_features)."""
        w = self.encoded.decode()
        if w.dtype != np.float32:
            return w.astype(np.float32)
        return w if w.flags.writeable else w.copy()  # torch wants writable memory (lossless codecs give views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.from_numpy(np.ascontiguousarray(self.weight_array())).to(x.device)
        y = torch.nn.functional.linear(x.float(), weight, self.bias)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the compressed weight (the whole blob, header included)."""
        return self.encoded.nbytes

    def extra_repr(self) -> str:
        bits = 8.0 * self.encoded.nbytes / max(1, self.encoded.size)
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, spec={self.encoded.codec}, bits/weight={bits:.3g}")
