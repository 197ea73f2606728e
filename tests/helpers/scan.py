"""Selective-scan inputs and a runner shared by the kernel tests."""
import torch

import kernels


def scan_inputs(batch, dim, length, dstate, groups=None, dtype=torch.float32, seed=0,
                with_D=True, with_z=True, with_bias=True):
    """mamba_ssm's test distribution (A = -0.5 rand, delta = 0.5 rand, bias = 0.5 rand) with
    standard-normal u, B, C, D, z."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    bc_shape = (batch, dstate, length) if groups is None else (batch, groups, dstate, length)
    return dict(
        u=randn(batch, dim, length),
        delta=0.5 * torch.rand(batch, dim, length, generator=g, dtype=dtype),
        A=-0.5 * torch.rand(dim, dstate, generator=g, dtype=dtype),
        B=randn(*bc_shape), C=randn(*bc_shape),
        D=randn(dim) if with_D else None,
        z=randn(batch, dim, length) if with_z else None,
        delta_bias=0.5 * torch.rand(dim, generator=g, dtype=dtype) if with_bias else None,
    )


def run_scan(inputs, backend, delta_softplus=True, grad_seed=1):
    """(out, last_state, {name: grad}) for one backend, gradients of <out, w> for a fixed w."""
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_(True))
              for k, v in inputs.items()}
    out, last = kernels.selective_scan(**leaves, delta_softplus=delta_softplus,
                                       return_last_state=True, backend=backend)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed),
                         dtype=out.dtype)
    (out * weight).sum().backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return out.detach(), last, grads


def max_scaled_error(a, b):
    """max |a - b| / max(1, max |a|): an absolute error for O(1) values, relative for large."""
    return float((a - b).abs().max()) / max(1.0, float(a.abs().max()))
