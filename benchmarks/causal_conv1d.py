"""causal_conv1d_fn on this CPU: PyTorch's depthwise F.conv1d (+ silu) against the memory-traffic floor and a
plain per-tap loop of PyTorch ops, forward and forward+backward, and the decode step.

    python benchmarks/causal_conv1d.py            # (2, 1536, 2048) float32, width 4 (mamba-130m's d_inner)
    python benchmarks/causal_conv1d.py --threads 2

One PyTorch thread by default: on a shared machine whose cores are busy a parallel region waits for a
descheduled thread (a 60 ms stall on a 0.1 ms call was seen at load average 5 on 2 cores), which says nothing
about the op; every case, the floor included, runs with the same thread count.

The floor is a copy of x into an output of the same size (``out.copy_(x)``): the bytes the convolution must move
(read x once, write out once), measured on the same machine in the same run. Writes
benchmarks/results/causal_conv1d.json: median seconds per case, the ratio to the floor, the load average.
"""

from __future__ import annotations

import argparse

import numba
import torch
import torch.nn.functional as F
from timing import median_seconds, write_results

from scanforge.compat.causal_conv1d import causal_conv1d_fn, causal_conv1d_update


def per_tap(x, weight, bias):
    """The plain definition: one shifted multiply-add per tap, then silu."""
    width, L = weight.shape[1], x.shape[-1]
    padded = F.pad(x, (width - 1, 0))
    out = bias[:, None].expand_as(x).clone()
    for k in range(width):
        out += weight[:, k, None] * padded[..., k:k + L]
    return F.silu(out)


@numba.njit(fastmath=True, cache=True)
def _numba_conv(x, w, b, out):  # pragma: no cover - compiled
    """One pass per tap over a contiguous row: what a generated CPU kernel would do (no silu: Numba's exp is
    scalar without SVML, so the activation stays PyTorch's vectorised one)."""
    batch, dim, L = x.shape
    width = w.shape[1]
    for i in range(batch):
        for d in range(dim):
            row, src = out[i, d], x[i, d]
            row[:] = b[d]
            for k in range(width):
                shift, wk = width - 1 - k, w[d, k]
                for t in range(shift, L):
                    row[t] += wk * src[t - shift]


def numba_then_silu(x, w, b, out):
    _numba_conv(x.numpy(), w.numpy(), b.numpy(), out.numpy())
    return F.silu(out, inplace=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[2, 1536, 2048], metavar=("BATCH", "DIM", "L"))
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.manual_seed(0)
    batch, dim, L = args.shape
    x = torch.randn(batch, dim, L)
    w, b = torch.randn(dim, args.width) * 0.3, torch.randn(dim)
    out = torch.empty_like(x)
    nbytes = 2 * x.numel() * x.element_size()
    timed = lambda fn: median_seconds(fn, warmup=3, repeats=args.repeats)  # noqa: E731

    floor = timed(lambda: out.copy_(x))
    rows = [{"case": "floor: copy x -> out (read + write the same bytes)", "seconds": floor}]
    rows.append({"case": "forward: causal_conv1d_fn (F.conv1d groups=dim + silu)",
                 "seconds": timed(lambda: causal_conv1d_fn(x, w, b, activation="silu"))})
    rows.append({"case": "forward: per-tap loop of PyTorch ops", "seconds": timed(lambda: per_tap(x, w, b))})
    numba_out = torch.empty_like(x)
    rows.append({"case": "forward: hand-written Numba loop (serial) + PyTorch silu",
                 "seconds": timed(lambda: numba_then_silu(x, w, b, numba_out))})
    rows.append({"case": "forward: silu alone (PyTorch)", "seconds": timed(lambda: F.silu(x))})
    want = causal_conv1d_fn(x, w, b, activation="silu")
    assert torch.allclose(numba_out, want, atol=1e-5) and torch.allclose(per_tap(x, w, b), want, atol=1e-5)

    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    dy = torch.randn_like(x)
    rows.append({"case": "forward+backward: causal_conv1d_fn",
                 "seconds": timed(lambda: torch.autograd.grad(causal_conv1d_fn(xg, wg, bg, activation="silu"),
                                                              (xg, wg, bg), dy))})
    rows.append({"case": "forward+backward: per-tap loop",
                 "seconds": timed(lambda: torch.autograd.grad(per_tap(xg, wg, bg), (xg, wg, bg), dy))})
    state, step = torch.zeros(batch, dim, args.width), x[..., 0].contiguous()
    rows.append({"case": f"decode step: causal_conv1d_update, ({batch}, {dim})",
                 "seconds": timed(lambda: causal_conv1d_update(step, state, w, b, "silu"))})
    for row in rows:
        row["x_floor"] = round(row["seconds"] / floor, 2)
        print(f"{row['case']:<62} {row['seconds'] * 1e3:9.3f} ms  {row['x_floor']:6.2f}x floor")
    gbps = nbytes / floor / 1e9
    write_results("causal_conv1d", rows, notes=(
        f"x ({batch}, {dim}, {L}) float32, width {args.width}, {args.threads} thread(s); "
        f"floor = out.copy_(x), {nbytes / 1e6:.1f} MB moved "
        f"at {gbps:.1f} GB/s; x_floor = seconds / floor seconds (forward+backward moves about 3x the forward's "
        "bytes: reads x and dy, writes dx)"), shape=[batch, dim, L], width=args.width)


if __name__ == "__main__":
    main()
