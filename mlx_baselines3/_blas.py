"""Route MLX's CPU matrix products to an optimized BLAS on Linux.

MLX's Linux CPU wheel (``mlx[cpu]``) links the reference (netlib) BLAS. Its three matrix-product
entry points, ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_cgemm``, are undefined dynamic symbols
of ``libmlx.so``, called through its procedure linkage table (PLT): each call jumps through one
pointer-sized slot of the global offset table (GOT). This module points those slots at the same
functions of an OpenBLAS, by default the one shipped by the ``scipy-openblas32`` wheel (installed
with this package on Linux; no compiler, no system library). Float32 matmuls run 4-8x faster.

Why not preload the library with ``RTLD_GLOBAL``? The wheels that install with pip alone either
prefix their symbols (``scipy_cblas_sgemm``, which the dynamic linker cannot substitute for
``cblas_sgemm``) or need a system ``libgfortran.so.5``. Writing the slots directly works with
either naming, needs no import order (it works after ``mlx.core`` was imported, even after it
ran matmuls), and changes nothing outside ``libmlx.so``.

Every step is checked before anything is written: the ELF file is parsed from disk, a slot is
written only if the relocation is one the dynamic linker itself fills with a function address
(``JUMP_SLOT``/``GLOB_DAT``), the page holding it is writable (``/proc/self/maps``), and its
current value points either into ``libmlx.so`` (a lazy-binding stub) or at the symbol of the same
name in the library MLX links. If any check fails, nothing is changed and :func:`blas_info`
says why.

Intel's MKL is faster still for the 256x256 products of SAC/TD3 on Intel CPUs (a SAC gradient
step ~7% shorter on the 2-core Intel machine), but its pip wheels install ~830 MB, so it is an
optional extra (``pip install "mlx-baselines3[mkl]"``): when the ``mkl`` distribution is installed
and the CPU is Intel's, ``auto`` takes its ``libmkl_rt`` before ``scipy-openblas32``. On the AMD
EPYC (Zen 4) machine MKL was the slower one (a 256x256x256 product 429/226 us on 1/2 threads
against OpenBLAS's 395/194 us; SAC steps ~24% longer), so ``auto`` keeps OpenBLAS on other CPUs.

Control it with the environment variable ``MLX_BASELINES3_BLAS``:

- unset, ``1``, ``on``, ``auto``: MKL if the ``mkl`` wheel is installed and the CPU is Intel's,
  else ``scipy-openblas32``;
- ``openblas`` or ``mkl``: that one of the two wheels (a warning if it is not installed);
- ``0``, ``off``, ``false``, ``no``: leave MLX's BLAS alone;
- a path to a shared library exporting ``cblas_sgemm`` (e.g. a system ``libopenblas.so.0``): use
  that one.

Threads: if ``OPENBLAS_NUM_THREADS`` (``MKL_NUM_THREADS`` for MKL) is unset, the library is set to
:data:`DEFAULT_NUM_THREADS` (2, or 1 on a single usable core); MKL's dynamic choice of fewer
threads is turned off (with it a SAC step took 6.9 ms instead of 5.5). Training keeps the Python thread and MLX's worker on one core
(:mod:`mlx_baselines3.common.thread_placement`), so a second BLAS thread has the other core: on
the 2-core Linux machines this project is measured on, a 256x256x256 product went from 143 to
216 GFLOP/s and SAC/TD3 with 256x256 networks trained 15-20% faster. Products of small networks
(PPO's 64x64) stay below OpenBLAS's threading threshold and run on one thread either way.
:func:`set_blas_num_threads` changes it.

Nothing happens on macOS (MLX uses Accelerate there) or on other systems.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import mmap
import os
import re
import struct
import sys
import threading
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "BLAS_ENV_VAR",
    "DEFAULT_NUM_THREADS",
    "BlasInfo",
    "blas_info",
    "enable_optimized_blas",
    "set_blas_num_threads",
]

BLAS_ENV_VAR = "MLX_BASELINES3_BLAS"
"""Environment variable that disables the optimized BLAS (``0``/``off``) or names a library path."""

DEFAULT_NUM_THREADS = min(2, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 2
"""Threads given to the optimized BLAS when ``OPENBLAS_NUM_THREADS`` is not set."""

_OFF_VALUES = frozenset({"0", "off", "false", "no", "none"})
_AUTO_VALUES = frozenset({"", "1", "on", "true", "yes", "auto"})
# The BLAS wheels ``auto`` looks for, by the name MLX_BASELINES3_BLAS gives them, in order of
# preference: (pip distribution, file name of its library as a regular expression).
_WHEELS = {
    "mkl": ("mkl", r"libmkl_rt\.so(\.\d+)*"),
    "openblas": ("scipy-openblas32", r"libscipy_openblas.*\.so.*"),
}
# Thread-count environment variables a library reads itself (then left as the user set them).
_THREADS_ENV_VARS = {"openblas": "OPENBLAS_NUM_THREADS", "mkl": "MKL_NUM_THREADS"}
# Prefixes under which a library may export the standard CBLAS names.
_SYMBOL_PREFIXES = ("", "scipy_")
# ELF constants (see <elf.h>).
_EM_X86_64 = 62
_EM_AARCH64 = 183
# Relocation types whose slot the dynamic linker fills with the plain address of a symbol.
_ADDRESS_RELOCATIONS = {
    _EM_X86_64: {6, 7},  # R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT
    _EM_AARCH64: {1025, 1026},  # R_AARCH64_GLOB_DAT, R_AARCH64_JUMP_SLOT
}
_PT_LOAD = 1
_PT_DYNAMIC = 2
_DT_NULL, _DT_PLTRELSZ, _DT_STRTAB, _DT_SYMTAB, _DT_RELA, _DT_RELASZ = 0, 2, 5, 6, 7, 8
_DT_STRSZ, _DT_JMPREL = 10, 23


@dataclass(frozen=True)
class BlasInfo:
    """What :func:`enable_optimized_blas` did.

    :param active: MLX's matrix products now run in :attr:`library`.
    :param reason: one sentence on what happened (or why nothing did).
    :param library: path of the optimized library, when one was loaded.
    :param version: the library's own description (OpenBLAS's ``get_config``).
    :param num_threads: threads the library uses, when it reports them.
    :param symbols: the MLX imports routed to it, e.g. ``("cblas_sgemm", ...)``.
    :param mlx_library: path of the MLX shared library whose imports were routed.
    """

    active: bool
    reason: str
    library: str | None = None
    version: str | None = None
    num_threads: int | None = None
    symbols: tuple[str, ...] = field(default_factory=tuple)
    mlx_library: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-friendly)."""
        out = asdict(self)
        out["symbols"] = list(self.symbols)
        return out


_lock = threading.Lock()
_info: BlasInfo | None = None
_loaded: ctypes.CDLL | None = None  # kept alive for the life of the process
_routed: dict[str, tuple[int, int]] = {}  # symbol -> (slot address, function address)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def enable_optimized_blas() -> BlasInfo:
    """Route MLX's CPU BLAS calls to an optimized library (Linux only; idempotent).

    Safe to call at any time, before or after ``import mlx.core``. Never raises: failures are
    reported in the returned :class:`BlasInfo` (and a ``UserWarning`` when an explicitly named
    library cannot be used).

    :return: what happened.
    """
    global _info
    with _lock:
        if _info is None:
            _info = _enable()
        return _info


def blas_info() -> dict[str, Any]:
    """Describe the BLAS that MLX's CPU matrix products use now.

    Keys: those of :class:`BlasInfo` (``active``, ``reason``, ``library``, ``version``,
    ``num_threads``, ``symbols``, ``mlx_library``) and ``provider``: the file that holds the
    function ``libmlx.so`` reaches through its ``cblas_sgemm`` slot, read from that slot now
    (with ``dladdr``). ``active`` is checked afresh the same way. If MLX has not multiplied
    matrices yet, the slot is still a lazy-binding stub; a 2x2 matmul on the CPU binds it first.

    :return: a JSON-friendly dict.
    """
    with _lock:
        info = _info
    if info is None:
        info = BlasInfo(active=False, reason="enable_optimized_blas() has not been called")
    elif info.active:
        info = replace(info, num_threads=_library_num_threads(_loaded))
        if not all(ctypes.c_void_p.from_address(slot).value == func for slot, func in _routed.values()):
            info = replace(info, active=False, reason="MLX's BLAS slots were changed after they were routed")
    out = info.as_dict()
    out["provider"] = _current_provider() if sys.platform.startswith("linux") else None
    return out


def set_blas_num_threads(num_threads: int) -> None:
    """Set the number of threads of the optimized BLAS.

    :param num_threads: a positive thread count.
    :raises ValueError: ``num_threads`` is not a positive integer.
    :raises RuntimeError: no optimized BLAS is active, or it has no thread control.
    """
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    if _loaded is None:
        raise RuntimeError("no optimized BLAS is active (see mlx_baselines3.blas_info())")
    if not _set_threads(_loaded, num_threads):
        raise RuntimeError("the active BLAS library has no openblas_set_num_threads() or MKL_Set_Num_Threads()")


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def _enable() -> BlasInfo:
    global _loaded
    if not sys.platform.startswith("linux"):
        return BlasInfo(active=False, reason=f"not Linux ({sys.platform}): MLX's own BLAS is used")
    setting = os.environ.get(BLAS_ENV_VAR, "").strip()
    if setting.lower() in _OFF_VALUES:
        return BlasInfo(active=False, reason=f"disabled by {BLAS_ENV_VAR}={setting}")
    explicit = setting.lower() not in _AUTO_VALUES
    note = ""  # added to the reason

    def fail(message: str) -> BlasInfo:
        if explicit:  # the user asked for this library: say loudly that it is not used
            warnings.warn(f"mlx_baselines3: optimized BLAS not used: {message}", UserWarning, stacklevel=4)
        return BlasInfo(active=False, reason=message)

    if setting.lower() in _WHEELS:
        named = _wheel_libraries().get(setting.lower())
        if named is None:
            wheel = _WHEELS[setting.lower()][0]
            return fail(f"{BLAS_ENV_VAR}={setting}: the {wheel} wheel is not installed (pip install {wheel})")
        path = named
    elif explicit:
        path = Path(setting).expanduser()
        if not path.is_file():
            return fail(f"{BLAS_ENV_VAR}={setting} does not name an existing file")
    else:
        installed = _wheel_libraries()
        default = _default_library(installed)
        if default is None:
            return fail(
                "scipy-openblas32 is not installed (pip install scipy-openblas32); MLX uses its reference BLAS"
            )
        path = default
        if "mkl" in installed and path != installed["mkl"]:
            note = (
                f" (the mkl wheel is installed, but auto takes it on Intel CPUs only, not on this"
                f" {_cpu_vendor() or 'unknown'} one; {BLAS_ENV_VAR}=mkl uses it)"
            )

    import mlx.core  # noqa: F401  (loads libmlx.so, whose imports are routed)

    try:
        targets = _mlx_blas_imports()
    except (OSError, ValueError) as exc:
        return fail(f"could not read MLX's shared library: {exc}")
    if not targets:
        return fail("no loaded MLX shared library imports a cblas_* function")
    preloaded = _global_provider("cblas_sgemm")
    if preloaded is not None:
        return fail(f"MLX already gets cblas_sgemm from {preloaded} (LD_PRELOAD or RTLD_GLOBAL); left alone")
    try:
        library = ctypes.CDLL(str(path))
    except OSError as exc:
        return fail(f"could not load {path}: {exc}")
    if _THREADS_ENV_VARS[_library_kind(library)] not in os.environ:
        _set_threads(library, DEFAULT_NUM_THREADS)

    plan: list[tuple[str, int, int]] = []  # (symbol, slot address, function address)
    for lib_path, bias, imports in targets:
        for name, offsets in imports.items():
            func = _find_function(library, (name,))
            if func is None:
                continue
            func_addr = ctypes.cast(func, ctypes.c_void_p).value or 0
            for offset in offsets:
                problem = _slot_problem(bias + offset, name, lib_path, func_addr)
                if problem is not None:
                    return fail(problem)
                plan.append((name, bias + offset, func_addr))
    if not any(name == "cblas_sgemm" for name, _, _ in plan):
        return fail(f"{path} does not export cblas_sgemm")

    for name, slot, func_addr in plan:
        ctypes.c_void_p.from_address(slot).value = func_addr
        _routed[f"{name}@{slot:#x}"] = (slot, func_addr)
    _loaded = library
    symbols = tuple(sorted({name for name, _, _ in plan}))
    return BlasInfo(
        active=True,
        reason=f"MLX's {', '.join(symbols)} routed to {path.name}{note}",
        library=str(path),
        version=_library_version(library),
        num_threads=_library_num_threads(library),
        symbols=symbols,
        mlx_library=", ".join(lib for lib, _, _ in targets),
    )


def _mlx_blas_imports() -> list[tuple[str, int, dict[str, list[int]]]]:
    """(path, load bias, cblas imports) of each loaded libmlx* that imports cblas_* functions."""
    found = []
    for path, bias in _loaded_objects():
        if os.path.basename(path).startswith("libmlx"):
            imports = _blas_imports(path)
            if imports:
                found.append((path, bias, imports))
    return found


def _current_provider() -> str | None:
    """Path of the library libmlx's ``cblas_sgemm`` slot points at (binding the slot if still lazy)."""
    try:
        import mlx.core as mx

        slots = [
            (path, bias + offset)
            for path, bias, imports in _mlx_blas_imports()
            for offset in imports.get("cblas_sgemm", [])
        ]
        if not slots:
            return None
        mlx_path, slot = slots[0]
        owner = _dladdr(ctypes.c_void_p.from_address(slot).value or 0)
        if owner is not None and same_file(owner.dli_fname, mlx_path):
            x = mx.ones((2, 2), dtype=mx.float32, stream=mx.cpu)
            mx.eval(mx.matmul(x, x, stream=mx.cpu))
            owner = _dladdr(ctypes.c_void_p.from_address(slot).value or 0)
        if owner is None or owner.dli_fname is None:
            return None
        return os.path.realpath(owner.dli_fname.decode(errors="replace"))
    except (OSError, ValueError):
        return None


def _library_kind(library: ctypes.CDLL) -> str:
    """``"mkl"`` for a library with MKL's service functions, else ``"openblas"``."""
    return "mkl" if _find_function(library, ("MKL_Set_Num_Threads",)) is not None else "openblas"


def _set_threads(library: ctypes.CDLL, num_threads: int) -> bool:
    setter = _find_function(library, ("openblas_set_num_threads", "MKL_Set_Num_Threads"))
    if setter is None:
        return False
    setter.argtypes = [ctypes.c_int]
    setter.restype = None
    setter(num_threads)
    no_dynamic = _find_function(library, ("MKL_Set_Dynamic",))
    if no_dynamic is not None:  # MKL would otherwise choose fewer threads for "small" products
        no_dynamic.argtypes = [ctypes.c_int]
        no_dynamic.restype = None
        no_dynamic(0)
    return True


def wheel_file(distribution: str, name_pattern: str) -> Path | None:
    """Absolute path of the first file (in sorted order) that the installed pip distribution
    ``distribution`` lists and whose name matches the regular expression ``name_pattern`` in full;
    None if it is not installed or has no such file."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in sorted(files, key=str):
        if re.fullmatch(name_pattern, file.name):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    return None


def _wheel_libraries() -> dict[str, Path]:
    """The BLAS libraries of the installed :data:`_WHEELS`, by name."""
    found = {name: wheel_file(distribution, pattern) for name, (distribution, pattern) in _WHEELS.items()}
    return {name: path for name, path in found.items() if path is not None}


def _default_library(libraries: dict[str, Path] | None = None) -> Path | None:
    """The library ``auto`` routes to among ``libraries`` (default: :func:`_wheel_libraries`): the
    first in :data:`_WHEELS`'s order on an Intel CPU; elsewhere MKL comes last (on AMD's Zen 4 it
    measured slower than OpenBLAS). None if none is installed."""
    if libraries is None:
        libraries = _wheel_libraries()
    order = list(_WHEELS)
    if _cpu_vendor() != "GenuineIntel":
        order.sort(key=lambda name: name == "mkl")
    return next((libraries[name] for name in order if name in libraries), None)


def cpuinfo_field(name: str) -> str | None:
    """The first ``name`` field of ``/proc/cpuinfo`` (``vendor_id``, ``model name``, ...); None
    where it cannot be read or the CPU does not report it."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _cpu_vendor() -> str | None:
    """The CPU's ``vendor_id`` (``GenuineIntel``, ``AuthenticAMD``, ...) or None."""
    return cpuinfo_field("vendor_id")


def _find_function(library: ctypes.CDLL, names: tuple[str, ...]) -> Any:
    """The first of ``names`` the library exports, with or without a known prefix."""
    for name in names:
        for prefix in _SYMBOL_PREFIXES:
            try:
                return library[prefix + name]
            except AttributeError:
                continue
    return None


def _library_version(library: ctypes.CDLL) -> str | None:
    """OpenBLAS's own description (version, build options, CPU kernel) or MKL's version string."""
    get_config = _find_function(library, ("openblas_get_config",))
    if get_config is None:
        return _mkl_version(library)
    get_config.argtypes = []
    get_config.restype = ctypes.c_char_p
    raw = get_config()
    return raw.decode(errors="replace").strip() if raw else None


def _mkl_version(library: ctypes.CDLL) -> str | None:
    """MKL's version string, if ``library`` is MKL."""
    get_version = _find_function(library, ("MKL_Get_Version_String",))
    if get_version is None:
        return None
    buffer = ctypes.create_string_buffer(256)
    get_version.argtypes = [ctypes.c_char_p, ctypes.c_int]
    get_version.restype = None
    get_version(buffer, len(buffer))
    return buffer.value.decode(errors="replace").strip() or None


def _library_num_threads(library: ctypes.CDLL | None) -> int | None:
    if library is None:
        return None
    getter = _find_function(library, ("openblas_get_num_threads", "MKL_Get_Max_Threads"))
    if getter is None:
        return None
    getter.argtypes = []
    getter.restype = ctypes.c_int
    return int(getter())


# ---------------------------------------------------------------------------------------------
# The dynamic linker's view: loaded objects, symbol owners, page permissions
# ---------------------------------------------------------------------------------------------


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


class _DlPhdrInfo(ctypes.Structure):
    _fields_ = [
        ("dlpi_addr", ctypes.c_size_t),
        ("dlpi_name", ctypes.c_char_p),
        ("dlpi_phdr", ctypes.c_void_p),
        ("dlpi_phnum", ctypes.c_uint16),
    ]


_PHDR_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DlPhdrInfo), ctypes.c_size_t, ctypes.c_void_p)


def _libc_function(name: str) -> Any:
    for candidate in (None, "libdl.so.2"):
        try:
            return getattr(ctypes.CDLL(candidate), name)
        except (OSError, AttributeError):
            continue
    raise OSError(f"{name} is not available")


def _loaded_objects() -> list[tuple[str, int]]:
    """(path, load bias) of every object the dynamic linker has loaded."""
    found: list[tuple[str, int]] = []

    def visit(info: Any, _size: int, _data: Any) -> int:
        name = info.contents.dlpi_name
        if name:
            found.append((name.decode(errors="replace"), int(info.contents.dlpi_addr)))
        return 0

    iterate = _libc_function("dl_iterate_phdr")
    iterate.argtypes = [_PHDR_CALLBACK, ctypes.c_void_p]
    iterate.restype = ctypes.c_int
    iterate(_PHDR_CALLBACK(visit), None)
    return found


def _dladdr(address: int) -> _DlInfo | None:
    dladdr = _libc_function("dladdr")
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    return info if dladdr(ctypes.c_void_p(address), ctypes.byref(info)) else None


def same_file(a: str | bytes | None, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (equal strings when either cannot be read)."""
    if a is None:
        return False
    a_str = a.decode(errors="replace") if isinstance(a, bytes) else a
    try:
        return os.path.samefile(a_str, b)
    except OSError:
        return a_str == b


def _global_provider(name: str) -> str | None:
    """Path of the library that provides ``name`` in the global scope (LD_PRELOAD, RTLD_GLOBAL)."""
    try:
        func = ctypes.CDLL(None)[name]
    except (OSError, AttributeError):
        return None
    address = ctypes.cast(func, ctypes.c_void_p).value
    info = _dladdr(address) if address else None
    return info.dli_fname.decode(errors="replace") if info and info.dli_fname else "unknown library"


def _writable(address: int) -> bool:
    """Whether the mapping that holds ``address`` is writable (from ``/proc/self/maps``)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                span, perms = line.split()[:2]
                start, end = (int(x, 16) for x in span.split("-"))
                if start <= address < end:
                    return "w" in perms
    except OSError:
        return False
    return False


def _slot_problem(slot: int, name: str, mlx_path: str, func_addr: int) -> str | None:
    """Why the slot must not be written, or None when it holds what the dynamic linker put there."""
    if not _writable(slot):
        return f"the {name} slot of {os.path.basename(mlx_path)} is read-only (full RELRO); left alone"
    current = ctypes.c_void_p.from_address(slot).value or 0
    if current == func_addr:
        return None
    owner = _dladdr(current)
    if owner is None:
        return f"the {name} slot of {os.path.basename(mlx_path)} holds an unknown address; left alone"
    if same_file(owner.dli_fname, mlx_path):
        return None  # lazy binding: still points at the PLT stub of libmlx itself
    if owner.dli_sname is not None and owner.dli_sname.decode(errors="replace") == name:
        return None  # bound to the reference library's function of the same name
    return f"the {name} slot of {os.path.basename(mlx_path)} holds an unexpected function; left alone"


# ---------------------------------------------------------------------------------------------
# ELF: which GOT slots of a shared library hold its cblas_* imports
# ---------------------------------------------------------------------------------------------


def _blas_imports(path: str) -> dict[str, list[int]]:
    """Map each ``cblas_*`` function a shared library imports to the offsets of its GOT slots.

    Offsets are relative to the library's load bias. Only relocations that store the plain
    address of the symbol (``JUMP_SLOT``, ``GLOB_DAT``) on x86-64 / AArch64 ELF64 are listed.

    :raises ValueError: the file is not a little-endian ELF64 shared library for those machines.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse_blas_imports(path, data)


def _parse_blas_imports(path: str, data: mmap.mmap) -> dict[str, list[int]]:
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path} is not a little-endian 64-bit ELF file")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine not in _ADDRESS_RELOCATIONS:
        raise ValueError(f"{path} is for ELF machine {machine}, not x86-64 or AArch64")
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        raise ValueError(f"{path} has no dynamic section")

    def file_offset(vaddr: int) -> int:
        for seg_vaddr, seg_offset, seg_size in loads:
            if seg_vaddr <= vaddr < seg_vaddr + seg_size:
                return seg_offset + vaddr - seg_vaddr
        raise ValueError(f"{path}: address {vaddr:#x} is not in a loaded segment")

    tags: dict[int, int] = {}
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == _DT_NULL:
            break
        tags.setdefault(tag, value)
    if _DT_SYMTAB not in tags or _DT_STRTAB not in tags:
        raise ValueError(f"{path} has no dynamic symbol table")
    symtab = file_offset(tags[_DT_SYMTAB])
    strtab = file_offset(tags[_DT_STRTAB])
    strsz = tags.get(_DT_STRSZ, len(data) - strtab)

    def symbol_name(index: int) -> str:
        st_name = struct.unpack_from("<I", data, symtab + index * 24)[0]
        if st_name >= strsz:
            raise ValueError(f"{path}: symbol name offset out of range")
        end = data.find(b"\0", strtab + st_name)
        if end < 0:
            raise ValueError(f"{path}: unterminated symbol name")
        return data[strtab + st_name : end].decode(errors="replace")

    wanted_types = _ADDRESS_RELOCATIONS[machine]
    imports: dict[str, list[int]] = {}
    for table, size_tag in ((_DT_JMPREL, _DT_PLTRELSZ), (_DT_RELA, _DT_RELASZ)):
        if table not in tags or size_tag not in tags:
            continue
        start = file_offset(tags[table])
        for pos in range(start, start + tags[size_tag], 24):
            r_offset, r_info, r_addend = struct.unpack_from("<QQq", data, pos)
            sym_index, rel_type = r_info >> 32, r_info & 0xFFFFFFFF
            if rel_type not in wanted_types or sym_index == 0 or r_addend != 0:
                continue
            name = symbol_name(sym_index)
            if name.startswith("cblas_"):
                imports.setdefault(name, []).append(r_offset)
    return imports
