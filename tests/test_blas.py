"""The optimized BLAS behind MLX's CPU matmuls (mlx_baselines3._blas).

On Linux, importing the package routes MLX's ``cblas_*gemm`` calls to OpenBLAS. These tests check
that it is active in this process, that products are unchanged (against a float64 NumPy reference
and against MLX's own reference BLAS run in a subprocess), and that it can be turned off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from mlx_baselines3 import _blas

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS routing is Linux-only")


def _run(code: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_BASELINES3_BLAS", "LD_PRELOAD")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)


def _info_in_subprocess(prelude: str = "", **env_overrides: str) -> tuple[dict[str, Any], str]:
    code = prelude + "\nimport json\nfrom mlx_baselines3._blas import blas_info, enable_optimized_blas\n"
    code += "enable_optimized_blas()\nprint(json.dumps(blas_info()))\n"
    completed = _run(code, **env_overrides)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


# --------------------------------------------------------------------------------------------
# The products that the comparisons use: matmuls (plain, transposed, MLP shapes), float64,
# complex64 and a convolution, all from fixed NumPy inputs.
# --------------------------------------------------------------------------------------------


def _normal(rng: np.random.Generator, *shape: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _cases() -> tuple[dict[str, tuple[np.ndarray, np.ndarray, str]], tuple[np.ndarray, np.ndarray]]:
    """Matmul operands (with "n"/"t" for plain/transposed) and conv2d inputs, from a fixed seed."""
    rng = np.random.default_rng(1234)
    a, b = _normal(rng, 37, 129), _normal(rng, 129, 53)
    cases = {
        "rect": (a, b, "nn"),
        "a_t": (_normal(rng, 129, 37), b, "tn"),
        "b_t": (a, _normal(rng, 53, 129), "nt"),
        "both_t": (_normal(rng, 129, 37), _normal(rng, 53, 129), "tt"),
        "square_256": (_normal(rng, 256, 256), _normal(rng, 256, 256), "nn"),
    }
    for batch in (8, 64, 2048):  # a 64x64 MLP layer: forward, input gradient, weight gradient
        x, w = _normal(rng, batch, 64), _normal(rng, 64, 64)
        cases[f"mlp_forward_{batch}"] = (x, w, "nn")
        cases[f"mlp_input_grad_{batch}"] = (x, w, "nt")
        cases[f"mlp_weight_grad_{batch}"] = (x, x, "tn")
    cases["float64"] = (_normal(rng, 40, 70, dtype=np.float64), _normal(rng, 70, 30, dtype=np.float64), "nn")
    cases["complex64"] = (
        (_normal(rng, 20, 30) + 1j * _normal(rng, 20, 30)).astype(np.complex64),
        (_normal(rng, 30, 10) + 1j * _normal(rng, 30, 10)).astype(np.complex64),
        "nn",
    )
    return cases, (_normal(rng, 4, 12, 12, 3), _normal(rng, 8, 3, 3, 3))


def _mlx_products() -> dict[str, np.ndarray]:
    """Each case computed by MLX on the CPU (through whichever BLAS this process uses)."""
    cases, (images, kernels) = _cases()
    out = {}
    for name, (x, y, mode) in cases.items():
        xm = mx.array(x).T if mode[0] == "t" else mx.array(x)
        ym = mx.array(y).T if mode[1] == "t" else mx.array(y)
        out[name] = np.array(mx.matmul(xm, ym, stream=mx.cpu))
    out["conv2d"] = np.array(mx.conv2d(mx.array(images), mx.array(kernels), stream=mx.cpu))
    return out


def _numpy_reference() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each product in float64/complex128 NumPy, with its bound ``|A| @ |B|`` for the tolerance."""
    cases, conv_inputs = _cases()
    ref = {}
    for name, (x, y, mode) in cases.items():
        x = x.T if mode[0] == "t" else x
        y = y.T if mode[1] == "t" else y
        wide = np.complex128 if np.iscomplexobj(x) else np.float64
        ref[name] = (
            x.astype(wide) @ y.astype(wide),
            np.abs(x).astype(np.float64) @ np.abs(y).astype(np.float64),
        )
    images, kernels = conv_inputs
    # valid cross-correlation, NHWC images, OHWI kernels (MLX's layout)
    patches = np.lib.stride_tricks.sliding_window_view(images.astype(np.float64), (3, 3), axis=(1, 2))
    conv = np.einsum("nhwcij,oijc->nhwo", patches, kernels.astype(np.float64))
    bound = np.einsum("nhwcij,oijc->nhwo", np.abs(patches), np.abs(kernels).astype(np.float64))
    ref["conv2d"] = (conv, bound)
    return ref


def _assert_close(name: str, got: np.ndarray, ref: np.ndarray, bound: np.ndarray) -> None:
    # Forward error of a float32 sum of products: a small multiple of eps * sum(|a_i b_i|).
    err = np.abs(got.astype(ref.dtype) - ref)
    worst = float((err / (bound + 1e-30)).max())
    assert worst <= 1e-5, f"{name}: error {worst:.2e} x sum(|a||b|) exceeds 1e-5"


@pytest.fixture(scope="module")
def reference_products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The same products computed with MLX's own reference BLAS (MLX_BASELINES3_BLAS=0)."""
    out_file = tmp_path_factory.mktemp("blas") / "reference.npz"
    code = f"""
import importlib.util, numpy as np
from mlx_baselines3._blas import blas_info, enable_optimized_blas
enable_optimized_blas()
assert not blas_info()["active"], blas_info()
spec = importlib.util.spec_from_file_location("blas_test_products", {__file__!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
np.savez({str(out_file)!r}, **module._mlx_products())
"""
    completed = _run(code, MLX_BASELINES3_BLAS="0")
    assert completed.returncode == 0, completed.stderr
    with np.load(out_file) as data:
        return {key: data[key] for key in data.files}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _enabled() -> None:
    _blas.enable_optimized_blas()  # idempotent: importing the package has already called it


@linux_only
def test_importing_the_package_enables_it() -> None:
    completed = _run(
        "import json, mlx_baselines3\nfrom mlx_baselines3._blas import blas_info\nprint(json.dumps(blas_info()))"
    )
    assert completed.returncode == 0, completed.stderr
    info = json.loads(completed.stdout.strip().splitlines()[-1])
    assert info["active"], info["reason"]


@linux_only
def test_active_in_this_process() -> None:
    info = _blas.blas_info()
    assert info["active"], info["reason"]
    assert info["symbols"] and "cblas_sgemm" in info["symbols"]
    # dladdr on the slot libmlx.so calls through: it is the optimized library's function
    assert info["provider"] is not None
    assert os.path.samefile(info["provider"], info["library"])
    assert ("Math Kernel Library" if "libmkl_rt" in info["library"] else "OpenBLAS") in (info["version"] or "")
    json.dumps(info)  # what system_info and the benchmarks record must be JSON-friendly


@linux_only
def test_enable_is_idempotent() -> None:
    first = _blas.enable_optimized_blas()
    assert _blas.enable_optimized_blas() is first


def test_products_match_float64_numpy() -> None:
    out = _mlx_products()
    for name, (ref, bound) in _numpy_reference().items():
        _assert_close(name, out[name], ref, bound)


@linux_only
def test_products_match_mlx_reference_blas(reference_products: dict[str, np.ndarray]) -> None:
    assert _blas.blas_info()["active"]
    out = _mlx_products()
    bounds = {name: bound for name, (_, bound) in _numpy_reference().items()}
    assert set(out) == set(reference_products)
    for name, expected in reference_products.items():
        assert out[name].dtype == expected.dtype, name
        assert out[name].shape == expected.shape, name
        np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-5 * float(bounds[name].max()))
    # the optimized library really computed them: results are not bit-identical to the reference
    assert not np.array_equal(out["square_256"], reference_products["square_256"])


@linux_only
@pytest.mark.parametrize("value", ["0", "off"])
def test_environment_variable_disables_it(value: str) -> None:
    info, _ = _info_in_subprocess(MLX_BASELINES3_BLAS=value)
    assert info["active"] is False
    assert "MLX_BASELINES3_BLAS" in info["reason"] and "disabled" in info["reason"]
    assert info["library"] is None
    assert "scipy_openblas" not in (info["provider"] or "")


@linux_only
def test_missing_explicit_library_warns_and_keeps_mlx_blas(tmp_path: Path) -> None:
    missing = tmp_path / "libnothere.so"
    info, stderr = _info_in_subprocess(MLX_BASELINES3_BLAS=str(missing))
    assert info["active"] is False
    assert str(missing) in info["reason"]
    assert "UserWarning" in stderr and "optimized BLAS not used" in stderr


@linux_only
def test_explicit_library_without_cblas_is_refused() -> None:
    import _ctypes  # a shared library that certainly exists and exports no BLAS

    info, stderr = _info_in_subprocess(MLX_BASELINES3_BLAS=_ctypes.__file__)
    assert info["active"] is False
    assert "does not export cblas_sgemm" in info["reason"]
    assert "UserWarning" in stderr


HAS_MKL_WHEEL = "mkl" in _blas._wheel_libraries()


@linux_only
def test_named_wheel_libraries() -> None:
    info, _ = _info_in_subprocess(MLX_BASELINES3_BLAS="openblas")
    assert info["active"], info["reason"]
    assert "scipy_openblas" in info["library"] and os.path.samefile(info["provider"], info["library"])
    info, stderr = _info_in_subprocess(MLX_BASELINES3_BLAS="mkl", MKL_NUM_THREADS="1")
    if HAS_MKL_WHEEL:
        assert info["active"] and "libmkl_rt" in info["library"]
        assert info["num_threads"] == 1  # MKL_NUM_THREADS is the user's: left as set
    else:
        assert info["active"] is False and "the mkl wheel is not installed" in info["reason"]
        assert "UserWarning" in stderr  # asked for by name: said loudly


def test_auto_prefers_the_mkl_wheel_on_intel_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    both = {"mkl": Path("/x/libmkl_rt.so.3"), "openblas": Path("/y/libscipy_openblas.so")}
    monkeypatch.setattr(_blas, "_cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(_blas, "_wheel_libraries", lambda: dict(both))
    assert _blas._default_library() == both["mkl"]
    monkeypatch.setattr(_blas, "_wheel_libraries", lambda: {"openblas": both["openblas"]})
    assert _blas._default_library() == both["openblas"]
    monkeypatch.setattr(_blas, "_wheel_libraries", lambda: {})
    assert _blas._default_library() is None
    # MKL measured slower than OpenBLAS on AMD's Zen 4: auto keeps OpenBLAS off Intel CPUs
    monkeypatch.setattr(_blas, "_wheel_libraries", lambda: dict(both))
    for vendor in ("AuthenticAMD", None):
        monkeypatch.setattr(_blas, "_cpu_vendor", lambda vendor=vendor: vendor)
        assert _blas._default_library() == both["openblas"]
    monkeypatch.setattr(_blas, "_wheel_libraries", lambda: {"mkl": both["mkl"]})
    assert _blas._default_library() == both["mkl"]  # the only one installed: better than MLX's own


@linux_only
def test_cpu_vendor_matches_proc_cpuinfo() -> None:
    with open("/proc/cpuinfo") as handle:
        vendors = {line.split(":", 1)[1].strip() for line in handle if line.startswith("vendor_id")}
    assert _blas._cpu_vendor() == (vendors.pop() if vendors else None)


@linux_only
@pytest.mark.skipif(not HAS_MKL_WHEEL, reason="the optional mkl extra is not installed")
def test_mkl_wheel_is_routed_with_threads_and_exact_products() -> None:
    code = (
        "import json, numpy as np, mlx.core as mx\n"
        "from mlx_baselines3._blas import blas_info\n"
        "rng = np.random.default_rng(0)\n"
        "a, b = rng.standard_normal((256, 256)).astype(np.float32), rng.standard_normal((256, 256)).astype(np.float32)\n"
        "err = float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a.astype(np.float64) @ b).max())\n"
        "print(json.dumps(dict(blas_info(), err=err)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_BASELINES3_BLAS", "MKL_NUM_THREADS")}
    # auto takes MKL on an Intel CPU only; named, it is used on any CPU
    expect_auto = "libmkl_rt" if _blas._cpu_vendor() == "GenuineIntel" else "libscipy_openblas"
    for setting, expected in (("auto", expect_auto), ("mkl", "libmkl_rt")):
        out = subprocess.run([sys.executable, "-c", "import mlx_baselines3\n" + code], capture_output=True,
                             text=True, env={**env, "MLX_BASELINES3_BLAS": setting}, check=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        assert info["active"] and expected in info["library"], (setting, info)
        # auto passing over the installed MKL says so
        assert ("auto takes it on Intel CPUs only" in info["reason"]) == (expected != "libmkl_rt"), info
    assert "Math Kernel Library" in info["version"]
    assert os.path.samefile(info["provider"], info["library"])
    assert info["num_threads"] == _blas.DEFAULT_NUM_THREADS
    assert info["err"] < 1e-3


@linux_only
def test_routes_after_mlx_already_multiplied() -> None:
    # MLX has bound cblas_sgemm to its reference BLAS before the package is imported.
    prelude = "import mlx.core as mx\nx = mx.ones((8, 8))\nmx.eval(x @ x)\n"
    info, _ = _info_in_subprocess(prelude)
    assert info["active"], info["reason"]
    assert os.path.samefile(info["provider"], info["library"])


@linux_only
def test_preloaded_blas_is_left_alone() -> None:
    # A BLAS already in the global scope (here MLX's own reference library, via LD_PRELOAD) wins.
    libs = Path(mx.__file__).resolve().parent.parent / "mlx_cpu.libs"
    candidates = sorted(libs.glob("libblas*.so*"))
    if not candidates:
        pytest.skip("this MLX build ships no separate reference BLAS")
    info, _ = _info_in_subprocess(LD_PRELOAD=str(candidates[0]))
    assert info["active"] is False
    assert "left alone" in info["reason"]
    assert os.path.samefile(info["provider"], candidates[0])


@linux_only
def test_set_blas_num_threads() -> None:
    before = _blas.blas_info()["num_threads"]
    try:
        _blas.set_blas_num_threads(2)
        assert _blas.blas_info()["num_threads"] == 2
    finally:
        _blas.set_blas_num_threads(before)
    assert _blas.blas_info()["num_threads"] == before
    with pytest.raises(ValueError, match="num_threads"):
        _blas.set_blas_num_threads(0)


@linux_only
def test_default_thread_count_when_unset() -> None:
    info, _ = _info_in_subprocess()
    if "OPENBLAS_NUM_THREADS" in os.environ:
        assert info["num_threads"] == int(os.environ["OPENBLAS_NUM_THREADS"])
    else:
        assert info["num_threads"] == _blas.DEFAULT_NUM_THREADS
    info, _ = _info_in_subprocess(OPENBLAS_NUM_THREADS="2")
    assert info["num_threads"] == 2


def test_elf_reader_names_a_bad_file(tmp_path: Path) -> None:
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file at all" * 4)
    with pytest.raises(ValueError, match="libbogus.so"):
        _blas._blas_imports(str(bogus))


@pytest.mark.skipif(sys.platform.startswith("linux"), reason="checks the non-Linux path")
def test_nothing_happens_off_linux() -> None:
    info = _blas.blas_info()
    assert info["active"] is False
    assert "not Linux" in info["reason"]
