"""A faster ``malloc`` for training on Linux: find jemalloc/tcmalloc/mimalloc and preload it.

MLX builds every evaluated graph node on the calling (Python) thread: the array, its shape and
input lists, its output buffer and the task handed to MLX's CPU worker thread. The worker frees
most of them after running the task. glibc's ``malloc`` serves a thread from its own cache
(``tcache``, 7 blocks per size) and puts a block freed by another thread into *that* thread's
cache, so in this producer/consumer pattern the Python thread's cache stays empty and nearly every
allocation takes glibc's slow path (``_int_malloc``, ``malloc_consolidate``): ~20% of a PPO
CartPole run's CPU time on the 2-core Linux machine this project is measured on. glibc's tunables
do not change that (``tcache_count`` up to 65000, ``arena_max=1``, ``mxfast``: no gain or slower).

Allocators built for threads that free each other's memory (jemalloc, tcmalloc, mimalloc) remove
that cost: PPO CartPole (8 envs, ``n_steps`` 256) went from ~9.4-10.3k to ~12.4-13.3k steps/s with
any of the three preloaded. A process can only change its ``malloc`` before it starts, through
``LD_PRELOAD``; a library cannot do it for a running interpreter. So:

- ``python -m mlx_baselines3`` (the package's training command) restarts itself with the first
  allocator :func:`find_fast_allocator` finds, once, and says which one it uses;
- ``benchmarks/throughput.py`` preloads it into both libraries' processes (SB3 gains too: PPO +2%
  with jemalloc, +7% with tcmalloc);
- your own script: ``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python train.py``
  (Debian/Ubuntu: ``apt install libjemalloc2``, or ``libtcmalloc-minimal4``).

``get_system_info`` reports which library provides ``malloc``. The environment variable
``MLX_BASELINES3_MALLOC`` chooses: unset or ``auto`` searches the usual library folders for
:data:`FAST_ALLOCATORS` in that order, ``0``/``off`` leaves ``malloc`` alone, a path names the
library to preload. Nothing happens off Linux.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FAST_ALLOCATORS",
    "MALLOC_ENV_VAR",
    "environment_with_allocator",
    "find_fast_allocator",
    "malloc_info",
    "malloc_provider",
    "restart_with_fast_allocator",
]

MALLOC_ENV_VAR = "MLX_BASELINES3_MALLOC"

FAST_ALLOCATORS = ("libjemalloc.so.2", "libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libmimalloc.so.2")
"""Shared libraries looked for, in order of preference (Debian/Ubuntu package names: libjemalloc2,
libtcmalloc-minimal4, libgoogle-perftools4, libmimalloc2.0)."""

SEARCH_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
)
"""Folders searched for :data:`FAST_ALLOCATORS` when ``MLX_BASELINES3_MALLOC`` names none."""

# Set in the environment of a restarted process: it never restarts a second time.
_RESTARTED_ENV_VAR = "MLX_BASELINES3_MALLOC_RESTARTED"
_OFF_VALUES = frozenset({"0", "off", "false", "no", "none"})
_AUTO_VALUES = frozenset({"", "1", "on", "true", "yes", "auto"})


def malloc_provider() -> str | None:
    """Path of the shared library whose ``malloc`` this process calls (glibc's unless preloaded)."""
    if not sys.platform.startswith("linux"):
        return None
    from mlx_baselines3._blas import _global_provider

    return _global_provider("malloc")


def _is_fast(path: str | os.PathLike[str] | None) -> bool:
    if path is None:
        return False
    name = os.path.basename(os.fspath(path))
    return any(name.startswith(known.split(".so")[0] + ".so") for known in FAST_ALLOCATORS)


def find_fast_allocator(
    environ: Mapping[str, str] | None = None, search_dirs: Sequence[str] = SEARCH_DIRS
) -> Path | None:
    """The allocator library to preload, or None (turned off, not Linux, or none installed).

    :param environ: where ``MLX_BASELINES3_MALLOC`` is read (default: ``os.environ``)
    :param search_dirs: folders searched for :data:`FAST_ALLOCATORS`
    :raises FileNotFoundError: ``MLX_BASELINES3_MALLOC`` names a file that does not exist
    """
    environ = os.environ if environ is None else environ
    setting = environ.get(MALLOC_ENV_VAR, "").strip()
    if setting.lower() in _OFF_VALUES or not sys.platform.startswith("linux"):
        return None
    if setting.lower() not in _AUTO_VALUES:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{MALLOC_ENV_VAR}={setting} does not name an existing file")
        return path
    for name in FAST_ALLOCATORS:
        for folder in search_dirs:
            candidate = Path(folder) / name
            if candidate.is_file():
                return candidate
    return None


def environment_with_allocator(library: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` whose ``LD_PRELOAD`` starts with ``library`` (kept once)."""
    env = dict(os.environ if environ is None else environ)
    library = os.fspath(library)
    others = [entry for entry in env.get("LD_PRELOAD", "").replace(":", " ").split() if entry != library]
    env["LD_PRELOAD"] = " ".join([library, *others])
    return env


def restart_with_fast_allocator(argv: Sequence[str]) -> None:
    """Replace this process by ``python argv...`` with a fast allocator preloaded, when one is found.

    Returns (doing nothing) when ``malloc`` is already a fast allocator's, when none is found or it
    is turned off, off Linux, and in a process this function started already.

    :param argv: the arguments after the interpreter, e.g. ``["-m", "mlx_baselines3", ...]``
    """
    if os.environ.get(_RESTARTED_ENV_VAR) or _is_fast(malloc_provider()):
        return
    try:
        library = find_fast_allocator()
    except FileNotFoundError as exc:
        print(f"mlx_baselines3: {exc}; keeping the default malloc", file=sys.stderr)
        return
    if library is None:
        return
    env = environment_with_allocator(library)
    env[_RESTARTED_ENV_VAR] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)


def malloc_info() -> dict[str, Any]:
    """Which library provides ``malloc``, whether it is one of :data:`FAST_ALLOCATORS`, and which
    fast allocator is installed (``available``; None when none is found or it is turned off)."""
    provider = malloc_provider()
    try:
        available = find_fast_allocator()
    except FileNotFoundError:
        available = None
    return {"provider": provider, "fast": _is_fast(provider), "available": str(available) if available else None}
