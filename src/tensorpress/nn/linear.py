"""``CompressedLinear``: a ``torch.nn.Linear`` whose weight stays compressed between forwards.

The module keeps the weight's :class:`~tensorpress.Encoded` (the packed parts exactly as stored in the
container, no decoded copy) and computes ``y = x @ W.T + b`` one of two ways:

- **fused** (CPU, at most :attr:`CompressedLinear.kernel_max_tokens` rows of ``x``, no gradient wanted, and a
  format with a compressed product — ``quant``, ``nm``, ``bitmap``, ``block``, ``lowrank`` and the sums
  ``compensated``/``gear``/``outliers``, see :func:`tensorpress.kernels.composite.product`): the kernel
  multiplies straight from the compressed data, ``W`` is never decoded. This is the memory-bound case — one
  token at a time in generation — where reading fewer bytes is what makes it fast. Results are float32 sums
  in another order than BLAS's: equal to the decoded path within float rounding, not bit for bit.
- **decoded** (everything else: long prompts, where a GEMM is compute-bound and BLAS wins; formats without a
  product; ``kernels=False``): the weight is decoded through the kernel dispatch and multiplied with
  ``torch.nn.functional.linear`` in float32, the operation ``nn.Linear`` itself uses, so the outputs are bit
  for bit those of the same model with the decoded weights in plain ``nn.Linear`` layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.encoded import Encoded
from ..core.errors import InputError

_UNPREPARED = object()


class CompressedLinear(torch.nn.Module):
    """``y = x @ W.T + b`` with ``W`` (out_features × in_features) held as an :class:`Encoded`.

    ``bias``: a float tensor of ``out_features`` or None. Inputs of any float dtype are computed in float32
    and the result is cast back to the input's dtype. ``kernels=False`` always takes the decoded path.
    """

    #: largest number of rows of ``x`` (tokens) multiplied by the fused kernel; more go through decode + BLAS
    kernel_max_tokens = 16

    def __init__(self, encoded: Encoded, bias: torch.Tensor | None = None, *, kernels: bool = True) -> None:
        super().__init__()
        if not isinstance(encoded, Encoded) or len(encoded.shape) != 2:
            got = encoded.shape if isinstance(encoded, Encoded) else type(encoded).__name__
            raise InputError(f"CompressedLinear needs the Encoded of a 2-d (out, in) weight, got {got}")
        self.encoded = encoded
        self.out_features, self.in_features = encoded.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise InputError(f"bias of shape {tuple(bias.shape)} does not fit {self.out_features} outputs")
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)
        self.kernels = kernels
        self._product: Any = _UNPREPARED

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, spec: Any, *, kernels: bool = True) -> CompressedLinear:
        """Compress ``linear``'s weight with ``spec`` (a spec string or codec)."""
        import tensorpress

        weight = linear.weight.detach().cpu().float().numpy()
        bias = None if linear.bias is None else linear.bias.detach().cpu()
        return cls(tensorpress.encode(weight, spec), bias, kernels=kernels)

    @property
    def product(self) -> Any:
        """The compressed product ``x → W · x`` (kernel operands extracted on first use), or None when the
        weight's format has none."""
        if self._product is _UNPREPARED:
            from ..kernels.composite import product

            self._product = product(self.encoded)
        return self._product

    def weight_array(self) -> np.ndarray:
        """The decoded weight, float32 (out_features, in_features)."""
        w = self.encoded.decode()
        if w.dtype != np.float32:
            return w.astype(np.float32)
        return w if w.flags.writeable else w.copy()  # torch wants writable memory (lossless codecs give views)

    def _fused(self, x: torch.Tensor) -> bool:
        if not self.kernels or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
            return False
        tokens = x.numel() // max(1, self.in_features)
        return 0 < tokens <= self.kernel_max_tokens and self.product is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused(x):
            rows = x.detach().reshape(-1, self.in_features).float().numpy()
            y = self.product(rows[0] if len(rows) == 1 else rows.T)  # (out,) or (out, tokens)
            out = torch.from_numpy(np.ascontiguousarray(y.reshape(self.out_features, len(rows)).T))
            if self.bias is not None:
                out += self.bias
            out = out.reshape(*x.shape[:-1], self.out_features)
        else:
            weight = torch.from_numpy(np.ascontiguousarray(self.weight_array())).to(x.device)
            out = torch.nn.functional.linear(x.float(), weight, self.bias)
        return out if out.dtype == x.dtype else out.to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the compressed weight (the whole blob, header included)."""
        return self.encoded.nbytes

    def extra_repr(self) -> str:
        bits = 8.0 * self.encoded.nbytes / max(1, self.encoded.size)
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, spec={self.encoded.codec}, bits/weight={bits:.3g}")
