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
(``benchmarks/throughput.py``): DQN CartPole +11%, SAC Pendulum +5%; PPO and TD3 unchanged.

Kernels compiled earlier without the flags would stay in MLX's cache and be reused, and kernels
built for this CPU must not be served to another one. So MLX's kernel cache is moved to a folder
of its own, keyed by the flags, the compiler and the CPU model and features, by setting
``TEMPDIR``: the C++ standard library's ``temp_directory_path``, which MLX uses, reads it after
``TMPDIR``, ``TMP`` and ``TEMP``, and Python's ``tempfile`` does not read it. When one of those
three is set, MLX would put its kernels there whatever this module does, so nothing is changed.

Wrapper and kernels live in ``$XDG_CACHE_HOME/mlx_baselines3/jit-<key>/`` (``~/.cache`` by
default; the system temporary folder when that cannot be written), checked to be owned by this
user, writable only by it, and on a file system that allows running programs. The wrapper runs
the real compiler with its own folder removed from ``PATH`` (a ``ccache`` link folder earlier on
``PATH`` then cannot lead back to it).

Control it with the environment variable ``MLX_BASELINES3_JIT_FLAGS``: unset, ``1``, ``on`` or
``auto`` for :data:`DEFAULT_FLAGS`; ``0``, ``off``, ``false`` or ``no`` to leave MLX alone (this
also undoes what a parent process set up); any other value is used as the flags (split as a
shell would). :func:`jit_info` (and ``get_system_info``) say what is active. Nothing happens off
Linux.
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
_FOLDER_NAME = "mlx_baselines3"


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
        _undo_inherited_setup()
        return JitInfo(False, reason=f"{JIT_ENV_VAR}={setting}")
    if not sys.platform.startswith("linux"):
        return JitInfo(False, reason="not Linux (MLX compiles CPU kernels with g++ on Linux only)")
    try:
        flags = shlex.split(DEFAULT_FLAGS if setting.lower() in _AUTO_VALUES else setting)
    except ValueError as error:
        return JitInfo(False, reason=f"{JIT_ENV_VAR} cannot be split into flags: {error}")
    bases = _base_folders()
    temp_variables = list(_TEMP_VARIABLES)
    if not _ours(os.environ.get(_CACHE_VARIABLE, ""), "kernels", bases):  # else set by a parent process
        temp_variables.append(_CACHE_VARIABLE)
    set_variable = next((name for name in temp_variables if os.environ.get(name)), None)
    if set_variable is not None:
        return JitInfo(False, reason=f"{set_variable} is set, so MLX's kernel cache cannot get a folder of its own")
    path = _path_without_wrappers(os.environ.get("PATH", ""), bases)
    compiler = shutil.which(_COMPILER, path=path)
    if compiler is None:
        return JitInfo(False, reason=f"no {_COMPILER} on PATH (MLX cannot compile fused CPU kernels)")
    key = _cache_key(compiler, flags)
    problems = []
    for base in bases:
        folder = base / f"jit-{key}"
        problem = _usable_folder(base, folder)
        if problem:
            problems.append(problem)
            continue
        bin_dir, kernels = folder / "bin", folder / "kernels"
        bin_dir.mkdir(mode=0o700, exist_ok=True)
        kernels.mkdir(mode=0o700, exist_ok=True)
        wrapper = bin_dir / _COMPILER
        _write_if_changed(wrapper, _wrapper_script(compiler, flags, bin_dir, kernels))
        os.environ[_CACHE_VARIABLE] = str(kernels)
        os.environ["PATH"] = os.pathsep.join([str(bin_dir), path])
        return JitInfo(
            True, flags=shlex.join(flags), compiler=compiler, wrapper=str(wrapper), kernel_cache=str(kernels / "mlx")
        )
    return JitInfo(False, reason="; ".join(problems))


def _base_folders() -> list[Path]:
    """Where wrappers and kernels may live, in order of preference."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [Path(cache_home) / _FOLDER_NAME, Path(tempfile.gettempdir()) / f"{_FOLDER_NAME}-{os.getuid()}"]


def _ours(entry: str, leaf: str, bases: list[Path]) -> bool:
    """``entry`` is a ``<base>/jit-<key>/<leaf>`` folder this module sets up (here or in a parent)."""
    if not entry:
        return False
    path = Path(entry)
    return path.name == leaf and path.parent.name.startswith("jit-") and path.parent.parent in bases


def _path_without_wrappers(path: str, bases: list[Path]) -> str:
    """``PATH`` without empty entries and without the wrapper folders under any of ``bases``."""
    return os.pathsep.join(entry for entry in path.split(os.pathsep) if entry and not _ours(entry, "bin", bases))


def _undo_inherited_setup() -> None:
    """Turned off here but set up by a parent process: drop its wrapper from PATH and its cache folder."""
    bases = _base_folders()
    os.environ["PATH"] = _path_without_wrappers(os.environ.get("PATH", ""), bases)
    if _ours(os.environ.get(_CACHE_VARIABLE, ""), "kernels", bases):
        del os.environ[_CACHE_VARIABLE]


def _usable_folder(base: Path, folder: Path) -> str:
    """Create ``base`` and ``folder`` (mode 0700) or check existing ones; why they cannot be used, or ''."""
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for path in (base, folder):
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                pass
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                return f"{path} is not a folder owned by this user and writable only by it"
        if os.statvfs(folder).f_flag & os.ST_NOEXEC:
            return f"{folder} is on a file system that does not allow running programs"
    except OSError as error:
        return f"cannot use {base}: {error}"
    return ""


def _wrapper_script(compiler: str, flags: list[str], bin_dir: Path, kernels: Path) -> str:
    real = shlex.quote(compiler)
    added = " ".join(shlex.quote(flag) for flag in flags)
    own = shlex.quote(str(bin_dir))
    # MLX's kernel compiles write "<kernels>/mlx/<version>/cpu/<name>.so" (then rename it)
    target = shlex.quote(str(kernels) + "/mlx/")
    return (
        "#!/bin/sh\n"
        "# Written by mlx_baselines3 (mlx_baselines3/_jit.py). MLX's kernel compiles get extra flags\n"
        "# (retried without them if that fails); every other command runs unchanged.\n"
        "set -f\n"
        "kept=\n"
        "IFS=:\n"
        "for entry in $PATH; do\n"
        f"  [ \"$entry\" = {own} ] || kept=\"${{kept:+$kept:}}$entry\"\n"
        "done\n"
        "unset IFS\n"
        "PATH=$kept\n"
        "export PATH\n"
        'case " $* " in\n'
        f'  *" -shared "*" -o "{target}*"/cpu/"*".so "*)\n'
        f'    {real} {added} "$@" 2>/dev/null && exit 0 ;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
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


def _cache_key(compiler: str, flags: list[str]) -> str:
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
    return hashlib.sha256(f"{shlex.join(flags)}\n{compiler_id}\n{cpu}".encode()).hexdigest()[:12]
