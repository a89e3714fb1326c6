"""MLX CPU matmul speed with MLX's reference BLAS and with the optimized BLAS (OpenBLAS).

Each configuration runs in its own process, because the BLAS is chosen once per process:

- ``reference``: ``MLX_BASELINES3_BLAS=0`` (MLX's own netlib BLAS);
- ``openblas-1t`` / ``openblas-2t``: the optimized BLAS with ``OPENBLAS_NUM_THREADS=1`` / ``2``.

Measured: square float32 matmuls (64, 256, 1024) in GFLOP/s, and one forward + backward pass of a
64x64 tanh MLP (SB3's default network; 64 inputs, 8 outputs, compiled with ``mx.compile``) at batch
64 and 2048, in microseconds per step and GFLOP/s (2 FLOPs per multiply-add; backward counted as
twice the forward). Each figure is the best over ``--rounds`` processes x ``--repeats`` timings
(on a shared machine other processes only ever add time). The table ends with the speed-up of each
optimized configuration over the reference.

Usage::

    python benchmarks/blas_matmul.py              # all three configurations
    python benchmarks/blas_matmul.py --rounds 5   # more processes per configuration
"""

from __future__ import annotations

import argparse
import functools
import json
import os
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


def _best_seconds(fn: Callable[[], None], repeats: int, min_time: float = 0.05) -> float:
    """Fastest of ``repeats`` timings of one call of ``fn`` (each timing averages enough calls).

    The minimum, not the median: on a shared machine the other processes only ever add time.
    """
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
    return min(samples)


def _eval_matmul(a: Any, b: Any) -> None:
    import mlx.core as mx

    mx.eval(a @ b)


def _eval_step(step: Callable[..., Any], x: Any, y: Any) -> None:
    import mlx.core as mx

    mx.eval(step(x, y))


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
        seconds = _best_seconds(functools.partial(_eval_matmul, a, b), repeats)
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

        step = mx.compile(nn.value_and_grad(model, loss_fn), inputs=model.state, outputs=model.state)
        seconds = _best_seconds(functools.partial(_eval_step, step, x, y), repeats)
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
    parser.add_argument(
        "--repeats", type=int, default=5, help="timings per measurement and process (best kept)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="processes per configuration, interleaved")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.repeats)))
        return

    # Rounds interleave the configurations so that a burst of load elsewhere hits all of them.
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for name in CONFIGS:
            result = run_config(name, args.repeats)
            best = results.setdefault(name, result)
            for case, entry in result.items():
                if case != "blas" and entry["us"] < best[case]["us"]:
                    best[case] = entry
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
