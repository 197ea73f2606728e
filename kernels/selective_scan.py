"""Selective scan (Mamba S6): one API, several backends behind one autograd node.

Semantics follow mamba_ssm's ``selective_scan_fn`` / ``selective_scan_ref`` exactly
(state-spaces/mamba, ``mamba_ssm/ops/selective_scan_interface.py``):

    delta  <- softplus(delta + delta_bias)            if delta_softplus
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      (ZOH for A, Euler for B)
    y_t     = <C_t, h_t> + D * u_t
    out     = y * silu(z)                              if z is given

Shapes: u, delta, z (B, D, L); A (D, N) real; B, C (B, N, L) or grouped (B, G, N, L) where
group g serves channels [g*D/G, (g+1)*D/G); D and delta_bias (D,). Computation is float32
(float64 when u is float64); the output is cast back to u's dtype, the last state stays in the
compute dtype. The gradient of the last state is ignored, as upstream.

Every backend runs inside the same ``SelectiveScanFn`` autograd node, so FLOP counters see one
op (``prim::PythonOp.SelectiveScanFn``) whatever the backend. Absent optional tensors are passed
to the node as empty tensors so that a tracer's input positions are fixed:
``[u, delta, A, B, C, D, z, delta_bias]``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterator

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_EMPTY = torch.empty(0)


class ScanBackend:
    """A selective-scan implementation.

    Subclasses implement ``forward``; ``backward`` defaults to differentiating ``forward``
    again under autograd (correct for any backend written in differentiable torch ops).
    Backends that are not differentiable (compiled kernels) override ``backward``.
    """

    name: str = ""
    #: device types this backend runs on ("cpu", "cuda", ...)
    devices: tuple[str, ...] = ("cpu", "cuda")
    #: ``auto`` picks the available backend with the highest priority for the device
    priority: int = 0

    def available(self) -> tuple[bool, str]:
        """(usable, reason if not)."""
        return True, ""

    def forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        """Return (out, last_state). Optional tensors are None when absent."""
        raise NotImplementedError

    def forward_for_backward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        """Like ``forward`` when gradients will be needed: return (out, last_state, extras),
        where ``extras`` is a tuple of tensors (e.g. states at chunk starts) handed back to
        ``backward`` so that it need not recompute them."""
        out, last_state = self.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return out, last_state, ()

    def backward(self, saved, dout, delta_softplus, extras=()):
        """Gradients for (u, delta, A, B, C, D, z, delta_bias); None for absent inputs.

        ``saved`` is the tuple of the eight inputs (None for absent ones); ``extras`` what
        ``forward_for_backward`` returned beside the output."""
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(True) for t in saved]
            out, _ = self.forward(*leaves, delta_softplus)
            wrt = [t for t in leaves if t is not None]
            grads = torch.autograd.grad(out, wrt, dout, allow_unused=True)
        it = iter(grads)
        return tuple(None if t is None else next(it) for t in leaves)


_BACKENDS: dict[str, ScanBackend] = {}
_FALLBACK_LOGGED: set[tuple[str, str]] = set()


def register_backend(backend: ScanBackend) -> ScanBackend:
    """Register a backend instance under ``backend.name`` (the one place backends are listed)."""
    if not backend.name:
        raise ValueError("a scan backend needs a name")
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> ScanBackend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown selective-scan backend {name!r}; known: {', '.join(sorted(_BACKENDS))}"
        ) from None


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def available_backends(device_type: str = "cpu") -> list[str]:
    """Names of the backends usable on ``device_type``, best first."""
    usable = [b for b in _BACKENDS.values()
              if device_type in b.devices and b.priority > -100 and b.available()[0]]
    return [b.name for b in sorted(usable, key=lambda b: -b.priority)]


_OVERRIDE = threading.local()


@contextlib.contextmanager
def scan_backend(name: str) -> Iterator[None]:
    """Run every ``backend="auto"`` scan inside the block with ``name`` (e.g. ``"shape"`` while
    counting FLOPs, ``"ref"`` for an oracle run). ``SSMBENCH_SCAN_BACKEND`` does the same for a
    whole process."""
    get_backend(name)
    previous = getattr(_OVERRIDE, "name", None)
    _OVERRIDE.name = name
    try:
        yield
    finally:
        _OVERRIDE.name = previous


def resolve_backend(name: str, device_type: str) -> ScanBackend:
    """Turn a requested backend name into a usable backend for ``device_type``.

    ``auto`` picks the override set by ``scan_backend(...)`` or ``SSMBENCH_SCAN_BACKEND`` if
    any, else the best available one. A named backend that cannot run here falls back to the
    best available one with a single logged line (never an exception)."""
    if name == "auto":
        name = getattr(_OVERRIDE, "name", None) or os.environ.get("SSMBENCH_SCAN_BACKEND") or "auto"
    if name != "auto":
        backend = get_backend(name)
        ok, why = backend.available()
        if ok and device_type in backend.devices:
            return backend
        if ok:
            why = f"it does not run on {device_type}"
        choice = available_backends(device_type)[0]
        key = (name, device_type)
        if key not in _FALLBACK_LOGGED:
            _FALLBACK_LOGGED.add(key)
            log.warning("selective_scan backend %r unavailable (%s); using %r", name, why, choice)
        return get_backend(choice)
    names = available_backends(device_type)
    if not names:
        raise RuntimeError(f"no selective-scan backend runs on {device_type}")
    return get_backend(names[0])


class SelectiveScanFn(torch.autograd.Function):
    """The single autograd node every backend runs in (see module docstring)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                backend_name):
        backend = resolve_backend(backend_name, u.device.type)
        opt = [None if t.numel() == 0 else t for t in (D, z, delta_bias)]
        if any(ctx.needs_input_grad[:8]):
            out, last_state, extras = backend.forward_for_backward(
                u, delta, A, B, C, *opt, delta_softplus)
        else:
            out, last_state = backend.forward(u, delta, A, B, C, *opt, delta_softplus)
            extras = ()
        ctx.backend = backend
        ctx.delta_softplus = delta_softplus
        ctx.present = [t is not None for t in opt]
        ctx.save_for_backward(u, delta, A, B, C, *(t if t is not None else _EMPTY for t in opt),
                              *extras)
        if return_last_state:
            ctx.mark_non_differentiable(last_state)
            return out, last_state
        return out

    @staticmethod
    def backward(ctx, dout, *unused_dstate):
        saved = list(ctx.saved_tensors)
        extras = tuple(saved[8:])
        saved = saved[:5] + [t if p else None for t, p in zip(saved[5:8], ctx.present)]
        grads = ctx.backend.backward(tuple(saved), dout.contiguous(), ctx.delta_softplus,
                                     extras)
        grads = [g if (g is None or ctx.needs_input_grad[i]) else None for i, g in enumerate(grads)]
        return (*grads, None, None, None)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, seqlen), got shape {tuple(u.shape)}")
    bsz, dim, seqlen = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim={dim}, dstate), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; ssmbench scans are real-valued")
    dstate = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            ok = t.shape == (bsz, dstate, seqlen)
        elif t.dim() == 4:
            ok = t.shape[0] == bsz and t.shape[2:] == (dstate, seqlen) and dim % t.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must be (batch, dstate, seqlen) or (batch, groups, dstate, seqlen) with "
                f"groups dividing dim={dim}; got {tuple(t.shape)} for u {tuple(u.shape)}, "
                f"dstate {dstate}"
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (dim,):
            raise ValueError(f"{name} must be (dim={dim},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend: str = "auto"):
    """mamba_ssm's ``selective_scan_fn`` with a choice of backend (see module docstring).

    Returns ``out`` (u's shape and dtype), or ``(out, last_state)`` with last_state
    (batch, dim, dstate) when ``return_last_state``.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    empty = u.new_empty(0)
    return SelectiveScanFn.apply(
        u, delta, A, B, C,
        empty if D is None else D,
        empty if z is None else z,
        empty if delta_bias is None else delta_bias,
        bool(delta_softplus), bool(return_last_state), backend,
    )


# ----------------------------------------------------------------------------- reference


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, N, L) -> (B, 1, N, L); grouped (B, G, N, L) -> (B, D, N, L), one row per channel."""
    if BC.dim() == 3:
        return BC.unsqueeze(1)
    return BC.repeat_interleave(dim // BC.shape[1], dim=1)


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def prepare_delta(delta, delta_bias, delta_softplus, dtype):
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def finish_output(y, u, D, z, out_dtype):
    """y + D*u, gated by silu(z), cast to the input dtype (mamba_ssm's epilogue)."""
    out = y if D is None else y + u * D.to(y.dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(y.dtype))
    return out.to(out_dtype)


def scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The sequential recurrence, one step per position: the oracle for every other backend.

    Written with ``unbind`` so that autograd through it is O(L) (mamba_ssm's ref indexes
    ``deltaA[:, :, i]``, which makes its backward O(L^2))."""
    dtype = compute_dtype(u)
    out_dtype = u.dtype
    dim = u.shape[1]
    uc = u.to(dtype)
    dt = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    Bx = expand_groups(B.to(dtype), dim)  # (B, 1|D, N, L)
    Cx = expand_groups(C.to(dtype), dim)
    dA = torch.exp(dt.unsqueeze(-1) * A.to(dtype)[:, None, :])          # (B, D, L, N)
    dBu = (dt * uc).unsqueeze(-1) * Bx.transpose(-1, -2)                 # (B, D, L, N)
    h = uc.new_zeros(u.shape[0], dim, A.shape[1])
    ys = []
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), Cx.unbind(-1)):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    return finish_output(y, uc, D, z, out_dtype), h


class ReferenceBackend(ScanBackend):
    name = "ref"
    devices = ("cpu", "cuda")
    priority = 0

    def forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        return scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


class ShapeBackend(ScanBackend):
    """Zeros of the right shape, for tracing FLOPs of large models quickly; never picked by
    ``auto``, only by name or ``scan_backend("shape")``."""

    name = "shape"
    devices = ("cpu", "cuda", "meta")
    priority = -100

    def forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=compute_dtype(u))
        return torch.zeros_like(u), state


register_backend(ReferenceBackend())
register_backend(ShapeBackend())

# The other backends register themselves on import (one module each).
from kernels import backends as _backends  # noqa: E402,F401
