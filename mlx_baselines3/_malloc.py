"""A faster ``malloc`` for training on Linux: find jemalloc/tcmalloc/mimalloc and preload it.

MLX builds every evaluated graph node on the calling (Python) thread: the array, its shape and
input lists, its output buffer and the task handed to MLX's CPU worker thread. The worker frees
most of them after running the task. glibc's ``malloc`` puts a block freed by a thread into that
thread's own cache (``tcache``: blocks up to 1032 bytes, 7 per size), so the Python thread's cache
is only refilled through ``malloc``'s slow path, under the arena lock, and larger blocks always take
that path. On the 2-core Linux machine this project is measured on, that slow path
(``_int_malloc``, ``malloc_consolidate``, ``_int_free``) was ~20% of a PPO CartPole run's CPU time,
and glibc's tunables did not reduce it.

Allocators built for threads that free each other's memory (jemalloc, tcmalloc, mimalloc) remove
most of that cost: PPO CartPole (8 envs, ``n_steps`` 256) went from ~9.5-10.3k to ~11.7-13.3k
steps/s with any of the three preloaded (+6% for the larger batches of ``python -m
mlx_baselines3``'s RL-Zoo settings; SAC with 256-unit networks: ~8%). A process
can only change its ``malloc`` before it starts, through ``LD_PRELOAD``; a library cannot do it
for a running interpreter. So:

- ``python -m mlx_baselines3`` (the package's training command) restarts itself once, with the
  same interpreter options, when it runs on glibc's ``malloc`` and :func:`find_fast_allocator`
  finds a library, and prints which ``malloc`` it runs with. A ``malloc`` preloaded by the user
  (another allocator, a sanitizer, valgrind) is left alone;
- ``benchmarks/*.py`` preload the same library into both libraries' worker processes;
- your own script: ``LD_PRELOAD=$(python -m mlx_baselines3 --print-malloc) python train.py``
  (``--print-malloc`` prints the library's path), or call :func:`restart_with_fast_allocator` first thing.

On Linux the package depends on ``cmeel-mimalloc``, a pip wheel of mimalloc (MIT licence, ~0.5 MB),
so a library is there on every machine the package installs on; system packages (Debian/Ubuntu:
``libjemalloc2``, ``libtcmalloc-minimal4``) are the fallback. ``get_system_info`` reports which
library provides ``malloc``. The environment variable ``MLX_BASELINES3_MALLOC`` chooses: unset or
``auto`` takes the packaged mimalloc, else searches the usual library folders for
:data:`FAST_ALLOCATORS` in that order; ``0``/``off``/``default`` leaves ``malloc`` alone; a path
names the library to preload. Nothing happens off Linux.
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
    "packaged_allocator",
    "resolve_allocator_setting",
    "restart_with_fast_allocator",
]

MALLOC_ENV_VAR = "MLX_BASELINES3_MALLOC"

FAST_ALLOCATORS = (
    "libjemalloc.so.2",
    "libtcmalloc_minimal.so.4",
    "libtcmalloc.so.4",
    "libmimalloc.so.3",
    "libmimalloc.so.2",
)
"""Shared libraries looked for in :data:`SEARCH_DIRS` when the packaged mimalloc is missing, in
order of preference (Debian/Ubuntu package names: libjemalloc2, libtcmalloc-minimal4,
libgoogle-perftools4, libmimalloc3, libmimalloc2.0)."""

PACKAGED_ALLOCATOR = "cmeel-mimalloc"
"""The pip distribution (a Linux dependency of this package) whose ``libmimalloc.so.<N>`` is
preferred to any system library."""

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
OFF_VALUES = frozenset({"0", "off", "false", "no", "none", "default"})
AUTO_VALUES = frozenset({"", "1", "on", "true", "yes", "auto"})


def malloc_provider() -> str | None:
    """Path of the shared library whose ``malloc`` this process calls (glibc's unless preloaded)."""
    if not sys.platform.startswith("linux"):
        return None
    from mlx_baselines3._blas import _global_provider

    return _global_provider("malloc")


def _is_c_library(path: str | None) -> bool:
    """Whether ``malloc`` comes from glibc itself (nothing preloaded over it)."""
    return path is not None and os.path.basename(path).startswith("libc.so")


def _is_fast(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` names one of :data:`FAST_ALLOCATORS` (any version suffix)."""
    if path is None:
        return False
    name = os.path.basename(os.fspath(path))
    return any(name == known or name.startswith(known.split(".so")[0] + ".so.") for known in FAST_ALLOCATORS)


def _splits_preload(path: Path) -> bool:
    """Whether ``LD_PRELOAD`` would split ``path`` (it separates entries at spaces and colons)."""
    return any(char in str(path) for char in " \t:")


def packaged_allocator() -> Path | None:
    """Absolute path of the mimalloc that the ``cmeel-mimalloc`` wheel installed, or None (not
    installed, or in a folder whose path ``LD_PRELOAD`` would split)."""
    from mlx_baselines3._blas import wheel_file

    path = wheel_file(PACKAGED_ALLOCATOR, r"libmimalloc\.so\.\d+")
    return None if path is None or _splits_preload(path) else path


def resolve_allocator_setting(
    setting: str, source: str = MALLOC_ENV_VAR, search_dirs: Sequence[str] | None = None
) -> Path | None:
    """The library a value of ``MLX_BASELINES3_MALLOC`` (or ``--malloc``) names, as an absolute path.

    :param source: where the value comes from, for the error messages
    :param search_dirs: folders searched for :data:`FAST_ALLOCATORS` for ``auto``; None: the
        packaged mimalloc (:func:`packaged_allocator`) first, then :data:`SEARCH_DIRS`
    :return: None for an ``off`` value (and off Linux); the search result for ``auto``
    :raises ValueError: the value names no readable file, or a path ``LD_PRELOAD`` would split
        (it separates entries at spaces and colons)
    """
    value = setting.strip()
    if value.lower() in OFF_VALUES or not sys.platform.startswith("linux"):
        return None
    if value.lower() in AUTO_VALUES:
        return _search(search_dirs)
    try:
        path = Path(value).expanduser().resolve()
        exists = path.is_file()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{source}={value}: {exc}") from exc
    if not exists:
        raise ValueError(f"{source}={value} does not name an existing file")
    if _splits_preload(path):
        raise ValueError(f"{source}={value}: LD_PRELOAD cannot hold a path with a space or colon")
    return path


def _search(search_dirs: Sequence[str] | None) -> Path | None:
    if search_dirs is None:
        packaged = packaged_allocator()
        if packaged is not None:
            return packaged
        search_dirs = SEARCH_DIRS
    for name in FAST_ALLOCATORS:
        for folder in search_dirs:
            candidate = Path(folder) / name
            if candidate.is_file():
                return candidate
    return None


def find_fast_allocator(
    environ: Mapping[str, str] | None = None, search_dirs: Sequence[str] | None = None
) -> Path | None:
    """The allocator library to preload, or None (turned off, not Linux, or none installed).

    :param environ: where ``MLX_BASELINES3_MALLOC`` is read (default: ``os.environ``)
    :param search_dirs: folders searched for :data:`FAST_ALLOCATORS` when it is unset or ``auto``
        (None: the packaged mimalloc first, then :data:`SEARCH_DIRS`)
    :raises ValueError: ``MLX_BASELINES3_MALLOC`` names no usable file
    """
    environ = os.environ if environ is None else environ
    return resolve_allocator_setting(environ.get(MALLOC_ENV_VAR, ""), search_dirs=search_dirs)


def environment_with_allocator(
    library: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A copy of ``environ`` whose ``LD_PRELOAD`` starts with ``library`` (kept once)."""
    env = dict(os.environ if environ is None else environ)
    library = os.fspath(library)
    env["LD_PRELOAD"] = " ".join([library, *_preload_entries(env, without=library)])
    return env


def _preload_entries(environ: Mapping[str, str], without: str) -> list[str]:
    """The libraries in ``environ``'s ``LD_PRELOAD`` (the loader splits at spaces and colons), but
    ``without``."""
    return [entry for entry in environ.get("LD_PRELOAD", "").replace(":", " ").split() if entry != without]


def restart_with_fast_allocator() -> None:
    """Replace this process by the same command with a fast allocator preloaded, when one is found.

    Runs ``sys.orig_argv`` again (interpreter options, ``-m`` wrappers such as ``cProfile``
    included). Returns, doing nothing, when ``malloc`` is not glibc's (a preloaded allocator,
    sanitizer or valgrind is kept), when no library is found or it is turned off, off Linux, and in
    a process it restarted already. In that process, if the preload did not take effect (the
    dynamic linker could not load it), it says so and takes the library out of ``LD_PRELOAD`` so
    that child processes do not repeat the loader's error.
    """
    from mlx_baselines3._blas import same_file

    provider = malloc_provider()
    if os.environ.get(_RESTARTED_ENV_VAR):
        wanted = os.environ.pop(_RESTARTED_ENV_VAR)
        if provider is not None and not same_file(provider, wanted):
            print(f"mlx_baselines3: {wanted} could not be preloaded; keeping {provider}", file=sys.stderr)
            os.environ["LD_PRELOAD"] = " ".join(_preload_entries(os.environ, without=wanted))
        return
    if not _is_c_library(provider):
        return
    try:
        library = find_fast_allocator()
    except ValueError as exc:
        print(f"mlx_baselines3: {exc}; keeping the default malloc", file=sys.stderr)
        return
    if library is None:
        return
    env = environment_with_allocator(library)
    env[_RESTARTED_ENV_VAR] = str(library)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def malloc_info() -> dict[str, Any]:
    """Which library provides ``malloc`` (``provider``), whether that is glibc itself (``c_library``)
    or one of :data:`FAST_ALLOCATORS` (``fast``), and the library :func:`find_fast_allocator` would preload (``available``; None when
    none is found, it is turned off or misnamed). Never raises."""
    provider = malloc_provider()
    try:
        available = find_fast_allocator()
    except ValueError:
        available = None
    return {
        "provider": provider,
        "c_library": _is_c_library(provider),
        "fast": _is_fast(provider),
        "available": str(available) if available else None,
    }
