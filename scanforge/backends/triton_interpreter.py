"""Make Triton's interpreter usable for scan kernels on CPU: evaluate ``associative_scan`` slice-wise.

The interpreter runs a scan with a custom combine function one *element* at a time in Python
(``ScanOps.generic_scan``), which makes a (BLOCK_D, N, BLOCK_L) chunk cost BLOCK_D*N*BLOCK_L
Python calls. The same sequential recurrence evaluated on whole slices across the non-scanned
axes performs the identical arithmetic on every element with BLOCK_L calls. Only interpreted
runs (CPU correctness tests) are affected; if a Triton release changes this private API, the
patch is skipped and the interpreter's own (slow, equally correct) scan is used.
"""

from __future__ import annotations

import numpy as np


def _generic_scan_by_slices(self, inputs):
    datas = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in inputs]
    outs = [np.empty_like(d) for d in datas]
    acc = None
    for i in range(datas[0].shape[0]):
        cur = tuple(self.to_tensor(np.ascontiguousarray(d[i]), arg.dtype) for d, arg in zip(datas, inputs))
        if acc is None:
            acc = cur
        else:
            ret = self.combine_fn.fn(*acc, *cur)
            acc = ret if isinstance(ret, tuple) else (ret,)
        for out, value in zip(outs, acc):
            out[i] = np.reshape(value.handle.data, out.shape[1:])
    return [self.to_tensor(np.ascontiguousarray(np.moveaxis(o, 0, self.axis)), arg.dtype)
            for o, arg in zip(outs, inputs)]


def install() -> bool:
    """Patch the interpreter once; returns whether the fast scan is active."""
    try:
        from triton.runtime.interpreter import ScanOps
    except ImportError:
        return False
    if not hasattr(ScanOps, "generic_scan"):
        return False
    if ScanOps.generic_scan is not _generic_scan_by_slices:
        ScanOps.generic_scan = _generic_scan_by_slices
    return True
