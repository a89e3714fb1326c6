"""Forward + backward throughput of the world-model heads (RewardHead, ValueHead, MTPHead, TwoHot loss).

Usage::

    python benchmarks/world_model_heads.py                 # B=16, T=64, D=512, K=255, L=8
    python benchmarks/world_model_heads.py --iters 10 --eager
    python benchmarks/world_model_heads.py --blas /path/to/libopenblas.so.0   # preload a faster BLAS

Each head row times one compiled ``nn.value_and_grad`` of the head's mean loss over a
``[B, T, D]`` batch of features (gradients evaluated, no optimizer step), after ``--warmup``
untimed calls; ``ms/step`` is the median over ``--iters`` calls (``best ms`` the fastest), and
``samples/s`` is ``B * T`` feature vectors per second at the median. The ``TwoHot.loss`` row
times the loss alone (encode + log-softmax cross-entropy + gradient) on ``[B, T, L, K]`` logits.
It runs on the CPU, and also on the GPU when MLX has one (CUDA or Metal). ``GFLOP/s`` counts
only the matrix multiplies (forward + backward = 3x the forward multiplies).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16, help="B")
    parser.add_argument("--steps", type=int, default=64, help="T")
    parser.add_argument("--dims", type=int, default=512, help="D, the feature size")
    parser.add_argument("--bins", type=int, default=255, help="K")
    parser.add_argument("--horizon", type=int, default=8, help="L, offsets of the MTP head")
    parser.add_argument("--hidden", type=int, nargs="*", default=[512, 512], help="trunk widths")
    parser.add_argument("--iters", type=int, default=3, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per row (the first compiles)")
    parser.add_argument("--eager", action="store_true", help="also time the uncompiled step")
    parser.add_argument("--devices", default="auto", help="'auto' (cpu + gpu if present), 'cpu' or 'gpu'")
    parser.add_argument("--blas", default=None, help="shared BLAS library to preload before importing MLX")
    return parser.parse_args(argv)


Row = tuple[str, Callable[[], Any], Callable[[], Any], int]


def build_rows(args: argparse.Namespace) -> list[Row]:
    """(name, compiled step, eager step, forward matmul FLOPs) for every head, on the default device."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_baselines3.world_models import MTPHead, RewardHead, TwoHot, ValueHead

    b, t, d, k, horizon = args.batch, args.steps, args.dims, args.bins, args.horizon
    hidden = tuple(args.hidden)
    n_rows = b * t
    widths = (d, *hidden)
    trunk_flops = sum(2 * n_rows * a * c for a, c in zip(widths[:-1], widths[1:]))
    out_flops = 2 * n_rows * widths[-1] * k

    mx.random.seed(0)
    two_hot = TwoHot(num_bins=k)
    feats = mx.random.normal((b, t, d))
    targets = 10.0 * mx.random.normal((b, t))

    def head_row(name: str, head: nn.Module, loss_fn: Callable[[nn.Module], mx.array], flops: int) -> Row:
        grad_fn = nn.value_and_grad(head, loss_fn)

        def step() -> Any:
            return grad_fn(head)

        return name, mx.compile(step, inputs=[head.state], outputs=[head.state]), step, flops

    def per_step_loss(m: nn.Module) -> mx.array:
        return mx.mean(m.loss(feats, targets))  # type: ignore[operator]

    rows = [
        head_row(
            "RewardHead",
            RewardHead(d, hidden_sizes=hidden, two_hot=two_hot, output_init="normal"),
            per_step_loss,
            trunk_flops + out_flops,
        ),
        head_row(
            "ValueHead",
            ValueHead(d, hidden_sizes=hidden, two_hot=two_hot, output_init="normal"),
            per_step_loss,
            trunk_flops + out_flops,
        ),
        head_row(
            "MTPHead",
            MTPHead(d, horizon, hidden_sizes=hidden, two_hot=two_hot, output_init="normal"),
            per_step_loss,  # MTPHead.loss is already a scalar
            trunk_flops + out_flops * horizon,
        ),
    ]

    # The loss alone: two-hot encode + log-softmax cross-entropy + gradient on [B, T, L, K] logits.
    logits = mx.random.normal((b, t, horizon, k))
    offset_targets = 10.0 * mx.random.normal((b, t, horizon))
    loss_grad = mx.value_and_grad(lambda z: mx.mean(two_hot.loss(z, offset_targets)))

    def loss_step() -> Any:
        return loss_grad(logits)

    rows.append(("TwoHot.loss", mx.compile(loss_step), loss_step, 0))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    if args.blas:  # must happen before mlx.core is imported to take over its BLAS symbols
        ctypes.CDLL(args.blas, mode=ctypes.RTLD_GLOBAL)

    import mlx.core as mx

    gpu_available = mx.cuda.is_available() or mx.metal.is_available()
    if args.devices == "auto":
        names = ["cpu"] + (["gpu"] if gpu_available else [])
    elif args.devices == "gpu" and not gpu_available:
        sys.exit("no GPU backend in this MLX build (mx.cuda / mx.metal unavailable)")
    elif args.devices in ("cpu", "gpu"):
        names = [args.devices]
    else:
        sys.exit(f"--devices must be 'auto', 'cpu' or 'gpu', got {args.devices!r}")

    n_rows = args.batch * args.steps
    print(
        f"mlx {getattr(mx, '__version__', '?')}; default device {mx.default_device()}; GPU backend available: {gpu_available}"
    )
    print(
        f"B={args.batch} T={args.steps} D={args.dims} K={args.bins} L={args.horizon} "
        f"hidden={list(args.hidden)} iters={args.iters} warmup={args.warmup}"
    )
    if args.blas:
        print(f"preloaded BLAS: {args.blas}")
    header = f"{'row':<12} {'device':<8} {'mode':<9} {'ms/step':>9} {'best ms':>9} {'samples/s':>11} {'GFLOP/s':>8}"
    print(header)
    print("-" * len(header))

    for device_name in names:
        mx.set_default_device(mx.Device(mx.gpu if device_name == "gpu" else mx.cpu))
        for name, compiled_fn, eager_fn, fwd_flops in build_rows(args):
            modes = [("compiled", compiled_fn)] + ([("eager", eager_fn)] if args.eager else [])
            for mode, fn in modes:
                for _ in range(args.warmup):
                    mx.eval(fn())
                times = []
                for _ in range(max(args.iters, 1)):
                    start = time.perf_counter()
                    mx.eval(fn())
                    times.append(time.perf_counter() - start)
                elapsed = statistics.median(times)
                gflops = f"{3 * fwd_flops / elapsed / 1e9:.1f}" if fwd_flops else "-"
                print(
                    f"{name:<12} {device_name:<8} {mode:<9} {elapsed * 1e3:>9.1f} {min(times) * 1e3:>9.1f} "
                    f"{n_rows / elapsed:>11.0f} {gflops:>8}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
