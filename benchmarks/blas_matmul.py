"""MLX CPU matmul speed with MLX's reference BLAS and with the optimized BLAS (OpenBLAS).

Each configuration runs in its own process, because the BLAS is chosen once per process:

- ``reference``: ``MLX_BASELINES3_BLAS=0`` (MLX's own netlib BLAS);
- ``openblas-1t`` / ``openblas-2t``: the optimized BLAS with ``OPENBLAS_NUM_THREADS=1`` / ``2``.

Measured: square float32 matmuls (64, 256, 1024) in GFLOP/s, and one forward + backward pass of a
64x64 tanh MLP (SB3's default network; 64 inputs, 8 outputs, compiled with ``mx.compile``) at batch
64 and 2048, in microseconds per step and GFLOP/s (2 FLOPs per multiply-add; backward counted as
twice the forward). The table ends with the speed-up of each optimized configuration over the
reference.

Usage::

    python benchmarks/blas_matmul.py              # all three configurations
    python benchmarks/blas_matmul.py --repeats 9  # more repeats for steadier medians
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

CONFIGS: dict[str, dict[str, str]] = {
    "reference": {"MLX_BASELINES3_BLAS": "0"},
    "openblas-1t": {"MLX_BASELINES3_BLAS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "openblas-2t": {"MLX_BASELINES3_BLAS": "1", "OPENBLAS_NUM_THREADS": "2"},
}
MATMUL_SIZES = (64, 256, 1024)
MLP_BATCHES = (64, 2048)
MLP_IN, MLP_HIDDEN, MLP_OUT = 64, 64, 8


def _median_seconds(fn: Callable[[], None], repeats: int, min_time: float = 0.05) -> float:
    """Median over ``repeats`` timings of one call of ``fn`` (each timing averages enough calls)."""
    fn()  # warm-up: compile, allocate, bind lazy symbols
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or calls >= 1 << 16:
            break
        calls *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def worker(repeats: int) -> dict[str, Any]:
    """Measure in this process with whatever BLAS the environment selects."""
    from mlx_baselines3._blas import blas_info, enable_optimized_blas

    enable_optimized_blas()
    import mlx.core as mx
    import mlx.nn as nn

    mx.set_default_device(mx.cpu)
    results: dict[str, Any] = {"blas": blas_info()}
    for n in MATMUL_SIZES:
        a = mx.random.normal((n, n))
        b = mx.random.normal((n, n))
        mx.eval(a, b)
        seconds = _median_seconds(lambda a=a, b=b: mx.eval(a @ b), repeats)
        results[f"matmul {n}"] = {"us": seconds * 1e6, "gflops": 2 * n**3 / seconds / 1e9}

    for batch in MLP_BATCHES:
        mx.random.seed(0)
        model = nn.Sequential(
            nn.Linear(MLP_IN, MLP_HIDDEN),
            nn.Tanh(),
            nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
            nn.Tanh(),
            nn.Linear(MLP_HIDDEN, MLP_OUT),
        )
        x = mx.random.normal((batch, MLP_IN))
        y = mx.random.normal((batch, MLP_OUT))

        def loss_fn(x: mx.array, y: mx.array, model: nn.Module = model) -> mx.array:
            return mx.mean(mx.square(model(x) - y))

        grad_fn = nn.value_and_grad(model, loss_fn)
        step = mx.compile(
            lambda x, y, grad_fn=grad_fn: grad_fn(x, y), inputs=model.state, outputs=model.state
        )
        seconds = _median_seconds(lambda step=step, x=x, y=y: mx.eval(step(x, y)), repeats)
        forward_flops = 2 * batch * (MLP_IN * MLP_HIDDEN + MLP_HIDDEN * MLP_HIDDEN + MLP_HIDDEN * MLP_OUT)
        results[f"mlp fwd+bwd b{batch}"] = {"us": seconds * 1e6, "gflops": 3 * forward_flops / seconds / 1e9}
    return results


def run_config(name: str, repeats: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh process with configuration ``name``'s environment."""
    env = dict(os.environ)
    env.update(CONFIGS[name])
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per measurement (median)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.repeats)))
        return

    results = {name: run_config(name, args.repeats) for name in CONFIGS}
    for name, result in results.items():
        blas = result["blas"]
        print(f"{name:12s} active={blas['active']} threads={blas['num_threads']} provider={blas['provider']}")
    print()
    cases = [key for key in results["reference"] if key != "blas"]
    optimized = [name for name in CONFIGS if name != "reference"]
    header = f"{'case':20s}" + "".join(f"{name + ' GFLOP/s':>22s}" for name in CONFIGS)
    header += "".join(f"{'x ' + name:>16s}" for name in optimized)
    print(header)
    print("-" * len(header))
    for case in cases:
        row = f"{case:20s}"
        for name in CONFIGS:
            entry = results[name][case]
            row += f"{entry['gflops']:11.2f} ({entry['us']:8.1f} us)"
        for name in optimized:
            row += f"{results[name][case]['gflops'] / results['reference'][case]['gflops']:15.2f}x"
        print(row)


if __name__ == "__main__":
    main()
