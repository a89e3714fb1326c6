"""Vectorised fused kernels for MLX's CPU backend on Linux.

Under ``mx.compile`` MLX fuses chains of elementwise operations (an Adam update, a ReLU and its
gradient, a loss) into one kernel per chain. On its CPU backend it writes each kernel as C++,
compiles it at run time with ``g++ -std=c++17 -O3 -Wall -fPIC -shared`` (the ``g++`` found on
``PATH``, run through ``/bin/sh``) and caches the library in ``$TMPDIR/mlx/<version>/cpu``.
Without further flags those loops stay scalar: a kernel that updates three arrays (Adam's two
moments and the parameter) reads several inputs that might overlap its outputs, and GCC's
default limit of 10 run-time overlap checks makes it give up vectorising; a square root keeps
``errno`` semantics and cannot be vectorised either; and the x86-64 baseline has no AVX.

This module puts a small ``g++`` wrapper first on ``PATH``. For MLX's kernel compiles only (the
command compiles a shared library out of MLX's kernel cache folder) it adds
:data:`DEFAULT_FLAGS`: the host's instruction set, no ``errno`` for math functions, enough
overlap checks, and no contraction of ``a * b + c`` into fused multiply-adds, so every result is
bit-for-bit the one of the scalar kernel. Any other ``g++`` command passes through unchanged. If
a compile with the flags fails, the wrapper compiles again without them.

Measured on the 2-core Linux x86-64 machines this project is benchmarked on, whole training runs
(``benchmarks/throughput.py``): DQN CartPole +10%, SAC Pendulum +5%, PPO CartPole +3%.

Kernels compiled earlier without the flags would stay in MLX's cache and be reused. So, when
none of ``TMPDIR``, ``TMP`` and ``TEMP`` is set, MLX's kernel cache is moved to a folder of its
own, keyed by the flags, the compiler and the CPU, by setting ``TEMPDIR`` (read by the C++
standard library's ``temp_directory_path``, which MLX uses, after the other three; Python's
``tempfile`` does not read it). When one of them is set, the kernels share MLX's usual cache.

The wrapper and the cache live in ``<tempdir>/mlx_baselines3-<uid>/`` (mode 0700, checked to be
owned by this user, on a file system that allows executing files).

Control it with the environment variable ``MLX_BASELINES3_JIT_FLAGS``: unset, ``1``, ``on`` or
``auto`` for :data:`DEFAULT_FLAGS`; ``0``, ``off``, ``false`` or ``no`` to leave MLX alone; any
other value is used as the flags. :func:`jit_info` (and ``get_system_info``) say what is active.
Nothing happens off Linux.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_FLAGS", "JIT_ENV_VAR", "enable_vectorized_kernels", "jit_info"]

JIT_ENV_VAR = "MLX_BASELINES3_JIT_FLAGS"

DEFAULT_FLAGS = "-march=native -fno-math-errno -ffp-contract=off --param vect-max-version-for-alias-checks=200"
"""Added to MLX's kernel compiles: vectorise for this CPU, bit-identical results to the scalar kernels."""

_OFF_VALUES = frozenset({"0", "off", "false", "no", "none"})
_AUTO_VALUES = frozenset({"", "1", "on", "true", "yes", "auto"})
_TEMP_VARIABLES = ("TMPDIR", "TMP", "TEMP")
_CACHE_VARIABLE = "TEMPDIR"
_COMPILER = "g++"
# MLX's kernel compiles write a shared library into .../mlx/<version>/cpu/
_KERNEL_COMMAND_PATTERN = '*" -shared "*"/mlx/"*"/cpu/"*'


@dataclass(frozen=True)
class JitInfo:
    """What :func:`enable_vectorized_kernels` did.

    :param active: MLX's kernel compiles go through the wrapper
    :param flags: the flags added (empty when not active)
    :param compiler: the real ``g++`` the wrapper runs
    :param wrapper: path of the wrapper
    :param kernel_cache: folder MLX caches kernels in (None: MLX's default, ``$TMPDIR/mlx``)
    :param reason: why it is not active (empty when active)
    """

    active: bool
    flags: str = ""
    compiler: str | None = None
    wrapper: str | None = None
    kernel_cache: str | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_info: JitInfo | None = None


def jit_info() -> dict[str, Any]:
    """What is done to MLX's CPU kernel compiles in this process (see the module documentation)."""
    return (_info or JitInfo(False, reason="not enabled")).as_dict()


def enable_vectorized_kernels() -> JitInfo:
    """Route MLX's CPU kernel compiles through the flag-adding ``g++`` wrapper (once per process).

    Takes effect for kernels MLX compiles from now on. Never raises: when something is missing it
    changes nothing and :func:`jit_info` gives the reason.
    """
    global _info
    if _info is None:
        try:
            _info = _enable()
        except OSError as error:
            _info = JitInfo(False, reason=f"could not write the compiler wrapper: {error}")
    return _info


def _enable() -> JitInfo:
    setting = os.environ.get(JIT_ENV_VAR, "").strip()
    if setting.lower() in _OFF_VALUES:
        return JitInfo(False, reason=f"{JIT_ENV_VAR}={setting}")
    if not sys.platform.startswith("linux"):
        return JitInfo(False, reason="not Linux (MLX compiles CPU kernels with g++ on Linux only)")
    flags = DEFAULT_FLAGS if setting.lower() in _AUTO_VALUES else setting
    base = Path(tempfile.gettempdir()) / f"mlx_baselines3-{os.getuid()}"
    problem = _private_folder(base)
    if problem:
        return JitInfo(False, reason=problem)
    bin_dir = base / "bin"
    bin_dir.mkdir(mode=0o700, exist_ok=True)
    compiler = _real_compiler(exclude=bin_dir)
    if compiler is None:
        return JitInfo(False, reason=f"no {_COMPILER} on PATH (MLX cannot compile fused CPU kernels)")
    if os.statvfs(bin_dir).f_flag & os.ST_NOEXEC:
        return JitInfo(False, reason=f"{bin_dir} is on a file system that does not allow executing files")
    wrapper = bin_dir / _COMPILER
    _write_if_changed(wrapper, _wrapper_script(compiler, flags))
    kernel_cache = None
    if not any(os.environ.get(name) for name in _TEMP_VARIABLES):
        cache = base / f"kernels-{_cache_key(compiler, flags)}"
        cache.mkdir(mode=0o700, exist_ok=True)
        os.environ[_CACHE_VARIABLE] = str(cache)
        kernel_cache = str(cache / "mlx")
    path = os.environ.get("PATH", "")
    entries = [entry for entry in path.split(os.pathsep) if entry and Path(entry) != bin_dir]
    os.environ["PATH"] = os.pathsep.join([str(bin_dir), *entries])
    return JitInfo(True, flags=flags, compiler=compiler, wrapper=str(wrapper), kernel_cache=kernel_cache)


def _private_folder(path: Path) -> str:
    """Create ``path`` (mode 0700) or check an existing one; a reason it cannot be used, or ''."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return f"{path} is not a folder owned by this user and writable only by it"
    return ""


def _real_compiler(exclude: Path) -> str | None:
    """The ``g++`` that ``PATH`` leads to, skipping the wrapper's own folder."""
    entries = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and Path(entry) != exclude]
    return shutil.which(_COMPILER, path=os.pathsep.join(entries))


def _wrapper_script(compiler: str, flags: str) -> str:
    real = shlex.quote(compiler)
    return (
        "#!/bin/sh\n"
        "# Written by mlx_baselines3 (mlx_baselines3/_jit.py). MLX's kernel compiles get extra flags\n"
        "# (retried without them if that fails); every other command runs unchanged.\n"
        f"case \"$*\" in\n"
        f"  {_KERNEL_COMMAND_PATTERN})\n"
        f"    {real} {flags} \"$@\" 2>/dev/null && exit 0 ;;\n"
        "esac\n"
        f"exec {real} \"$@\"\n"
    )


def _write_if_changed(path: Path, text: str) -> None:
    """Write an executable script atomically, unless it already holds ``text``."""
    try:
        if path.read_text() == text and os.access(path, os.X_OK):
            return
    except OSError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.chmod(0o700)
    os.replace(temporary, path)


def _cache_key(compiler: str, flags: str) -> str:
    """Kernels built with other flags, another compiler or for another CPU go to another folder."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as file:
            cpu = "".join(sorted({line for line in file if line.startswith(("model name", "flags"))}))
    except OSError:
        pass
    try:
        compiler_id = f"{compiler}:{os.stat(compiler).st_mtime_ns}"
    except OSError:
        compiler_id = compiler
    return hashlib.sha256(f"{flags}\n{compiler_id}\n{cpu}".encode()).hexdigest()[:12]
