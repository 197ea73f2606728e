"""``cpu`` backend: the C++/OpenMP kernel in ``kernels/csrc/selective_scan_cpu.cpp``.

Built with ``torch.utils.cpp_extension.load`` on first use (``-O3 -march=native -fopenmp``)
into ``$SSMBENCH_KERNEL_CACHE`` (default ``~/.cache/ssmbench/kernels``), under a name that
includes a hash of the source and of the CPU's flags, so a cache shared between machines never
runs code built for another CPU. The library has no torch headers (a seconds-long build); its C
entry points are called through ctypes with the tensors' data pointers. When the build fails
(no compiler, no ninja) ``available()`` says why and ``auto`` falls back to ``torch`` with one
logged line. ``SSMBENCH_NO_CPP_KERNELS=1`` disables the backend.

A build never hangs: builders take ``build.lock`` in the build directory, an OS file lock
(``filelock``) that the kernel releases when its owner dies however it dies (SIGKILL, a hang-up).
Holding it, a builder removes the ``lock`` file torch's ``cpp_extension`` left behind when a
build was killed (otherwise torch waits on it forever). A lock held by a live build is waited on
with a message naming it, for up to ``$SSMBENCH_KERNEL_LOCK_TIMEOUT_S`` (default 300 s); then the
``torch`` backend is used with one logged line.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import filelock
import torch

from kernels.selective_scan import ScanBackend, compute_dtype, register_backend

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "selective_scan_cpu.cpp"
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast", "-std=c++17"]
#: steps between the states the forward keeps for the backward
CHUNK = 32
#: seconds a build waits for another live process's build of the same kernel
LOCK_TIMEOUT_S = 300


class _Args(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "u", "delta", "A", "Bm", "Cm", "Dv", "z", "bias", "out", "last_state", "checkpoints",
        "dout", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias")] + [
        (name, ctypes.c_int64) for name in ("batch", "dim", "len", "dstate", "groups", "chunk")
    ] + [("softplus", ctypes.c_int32), ("nthreads", ctypes.c_int32)]


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "ssmbench" / "kernels"
    return Path(os.environ.get("SSMBENCH_KERNEL_CACHE") or default)


def _cpu_signature() -> str:
    """Identifies what -march=native compiles for: the CPU model and flags."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [line for line in info if line.startswith(("model name", "flags"))][:2]
    except OSError:
        import platform
        keep = [platform.machine(), platform.processor()]
    return "\n".join(keep)


_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def load_library():
    """Build (first use) and load the kernel library; raises on failure. Cached per process."""
    with _LOCK:
        if "lib" in _STATE:
            return _STATE["lib"]
        if "error" in _STATE:
            raise RuntimeError(_STATE["error"])
        try:
            _STATE["lib"] = _build_and_load()
        except Exception as exc:  # noqa: BLE001 - any build failure means "unavailable"
            lines = str(exc).strip().splitlines()
            _STATE["error"] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
            log.warning("selective_scan cpu kernel unavailable (%s); falling back to the torch "
                        "backend", _STATE["error"])
            raise RuntimeError(_STATE["error"]) from exc
        return _STATE["lib"]


def _build_and_load():
    if os.environ.get("SSMBENCH_NO_CPP_KERNELS"):
        raise RuntimeError("disabled by SSMBENCH_NO_CPP_KERNELS")
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    build_dir = kernel_build_dir()
    name = build_dir.name
    build_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with build_lock(build_dir):
        path = cpp_extension.load(
            name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir), is_python_module=False, verbose=False)
    lib = ctypes.CDLL(path)
    for fn in (lib.ssm_cpu_forward, lib.ssm_cpu_backward):
        fn.argtypes = [ctypes.POINTER(_Args), ctypes.c_int]
        fn.restype = ctypes.c_int
    lib.ssm_cpu_lanes.argtypes = [ctypes.c_int]
    log.debug("selective_scan cpu kernel ready in %.1f s (%s)", time.perf_counter() - start, path)
    return lib


def kernel_build_dir() -> Path:
    """Where this source, CPU and flags build: ``cache_dir()/ssmbench_scan_cpu_<hash>``."""
    digest = hashlib.sha1(SOURCE.read_bytes() + _cpu_signature().encode()
                          + " ".join(CFLAGS).encode()).hexdigest()[:12]
    return cache_dir() / f"ssmbench_scan_cpu_{digest}"


def lock_timeout() -> float:
    return float(os.environ.get("SSMBENCH_KERNEL_LOCK_TIMEOUT_S", LOCK_TIMEOUT_S))


@contextlib.contextmanager
def build_lock(build_dir: Path):
    """Hold ``build_dir/build.lock`` for a build (see the module docstring); raises
    RuntimeError naming the lock when a live build holds it past ``lock_timeout()``."""
    lock = filelock.FileLock(str(build_dir / "build.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.warning("waiting for %s: another process is building the cpu scan kernel (up to "
                    "%.0f s, then the torch backend is used)", lock.lock_file, lock_timeout())
        try:
            lock.acquire(timeout=lock_timeout())
        except filelock.Timeout:
            raise RuntimeError(f"{lock.lock_file} held by another build for over "
                               f"{lock_timeout():.0f} s") from None
    try:
        baton = build_dir / "lock"  # torch's FileBaton: only a killed build leaves it here
        if baton.exists():
            log.warning("removing %s, left by a killed build", baton)
            baton.unlink(missing_ok=True)
        yield
    finally:
        lock.release()


def _put_ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH; the pip package's binary sits beside the
    interpreter, which is not on PATH when the venv is not activated."""
    import shutil
    import sys

    if shutil.which("ninja"):
        return
    dirs = [os.path.dirname(sys.executable)]
    try:
        import ninja

        dirs.insert(0, getattr(ninja, "BIN_DIR", dirs[0]))
    except ImportError:
        pass
    os.environ["PATH"] = os.pathsep.join(dirs + [os.environ.get("PATH", "")])


def _ptr(t):
    return None if t is None else t.data_ptr()


def _check_buffer(name: str, t, dtype: torch.dtype) -> None:
    """The C++ code reads and writes raw memory: each buffer must be dense, on the CPU and of
    the compute dtype."""
    if t is not None and (t.device.type != "cpu" or not t.is_contiguous() or t.dtype != dtype):
        raise ValueError(f"cpu scan kernel: buffer {name!r} must be a contiguous CPU {dtype} "
                         f"tensor, got {t.dtype} on {t.device} (contiguous: {t.is_contiguous()})")


class CpuKernelBackend(ScanBackend):
    """C++/OpenMP kernel: float32 (bf16/fp16 inputs computed in float32) and float64."""

    name = "cpu"
    devices = ("cpu",)
    priority = 20

    def available(self) -> tuple[bool, str]:
        try:
            lib = load_library()
        except RuntimeError as exc:
            return False, f"C++ kernel build failed ({exc})"
        return (lib is not None), ""

    # -------------------------------------------------------------------------- helpers

    @staticmethod
    def _inputs(u, delta, A, B, C, D, z, delta_bias):
        dtype = compute_dtype(u)
        bsz, dim, length = u.shape
        n = A.shape[1]
        groups = 1 if B.dim() == 3 else B.shape[1]
        if n > 256:
            raise ValueError(f"the cpu scan kernel supports dstate <= 256, got {n}")

        def c(t):
            return None if t is None else t.detach().to(dtype).contiguous()

        return dict(
            dtype=dtype, shape=(bsz, dim, length, n, groups),
            u=c(u), delta=c(delta), A=c(A),
            B=c(B.reshape(bsz, groups, n, length).transpose(-1, -2)),   # (b, G, L, N)
            C=c(C.reshape(bsz, groups, n, length).transpose(-1, -2)), D=c(D), z=c(z),
            bias=c(delta_bias),
        )

    @staticmethod
    def _args(x, softplus, chunk, **buffers) -> _Args:
        """The C struct of data pointers. ``_Args`` holds plain integers, which do not keep a
        tensor alive, so every tensor whose pointer is taken is also kept on ``args.tensors``:
        a temporary such as ``dout.to(float32)`` lives as long as the struct (before, its memory
        was freed and reused while the kernel still read it: bf16/fp16 gradients of 1e35)."""
        bsz, dim, length, n, groups = x["shape"]
        tensors = {"u": x["u"], "delta": x["delta"], "A": x["A"], "Bm": x["B"], "Cm": x["C"],
                   "Dv": x["D"], "z": x["z"], "bias": x["bias"], **buffers}
        args = _Args(batch=bsz, dim=dim, len=length, dstate=n, groups=groups, chunk=chunk,
                     softplus=int(bool(softplus)), nthreads=max(1, torch.get_num_threads()))
        for key, tensor in tensors.items():
            _check_buffer(key, tensor, x["dtype"])
            setattr(args, key, _ptr(tensor))
        args.tensors = tensors
        return args

    def _run_forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep: bool):
        lib = load_library()
        x = self._inputs(u, delta, A, B, C, D, z, delta_bias)
        bsz, dim, length, n, _ = x["shape"]
        out = torch.empty(bsz, dim, length, dtype=x["dtype"])
        last = torch.empty(bsz, dim, n, dtype=x["dtype"])
        chunks = (length + CHUNK - 1) // CHUNK
        ck = torch.empty(bsz, dim, chunks, n, dtype=x["dtype"]) if keep else None
        args = self._args(x, delta_softplus, CHUNK if keep else 0, out=out, last_state=last,
                          checkpoints=ck)
        if lib.ssm_cpu_forward(ctypes.byref(args), int(x["dtype"] == torch.float64)):
            raise RuntimeError(f"cpu scan kernel rejected shapes {x['shape']}")
        return out.to(u.dtype), last, ck

    # -------------------------------------------------------------------------- API

    def forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        out, last, _ = self._run_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                         keep=False)
        return out, last

    def forward_for_backward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        out, last, ck = self._run_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                          keep=True)
        return out, last, (ck,)

    def backward(self, saved, dout, delta_softplus, extras=()):
        lib = load_library()
        u, delta, A, B, C, D, z, delta_bias = saved
        x = self._inputs(u, delta, A, B, C, D, z, delta_bias)
        bsz, dim, length, n, groups = x["shape"]
        dtype = x["dtype"]
        lanes = lib.ssm_cpu_lanes(int(dtype == torch.float64))
        blocks = -(-(dim // groups) // lanes)
        ck = extras[0].contiguous() if extras else None
        grads = dict(
            du=torch.empty(bsz, dim, length, dtype=dtype),
            ddelta=torch.empty(bsz, dim, length, dtype=dtype),
            dA=torch.empty(bsz, dim, n, dtype=dtype),
            dB=torch.empty(bsz, groups, blocks, length, n, dtype=dtype),
            dC=torch.empty(bsz, groups, blocks, length, n, dtype=dtype),
            dD=None if D is None else torch.empty(bsz, dim, dtype=dtype),
            dz=None if z is None else torch.empty(bsz, dim, length, dtype=dtype),
            dbias=None if delta_bias is None else torch.empty(bsz, dim, dtype=dtype),
        )
        args = self._args(x, delta_softplus, CHUNK, checkpoints=ck,
                          dout=dout.to(dtype).contiguous(), **grads)
        if lib.ssm_cpu_backward(ctypes.byref(args), int(dtype == torch.float64)):
            raise RuntimeError(f"cpu scan kernel rejected shapes {x['shape']}")

        def bc(g, like):
            g = g.sum(2).transpose(-1, -2)          # (b, G, N, L)
            return (g.squeeze(1) if like.dim() == 3 else g).to(like.dtype)

        return (
            grads["du"].to(u.dtype), grads["ddelta"].to(delta.dtype),
            grads["dA"].sum(0).to(A.dtype), bc(grads["dB"], B), bc(grads["dC"], C),
            None if D is None else grads["dD"].sum(0).to(D.dtype),
            None if z is None else grads["dz"].to(z.dtype),
            None if delta_bias is None else grads["dbias"].sum(0).to(delta_bias.dtype),
        )


register_backend(CpuKernelBackend())
