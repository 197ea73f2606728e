"""Model-test helpers: inputs a small network can learn from."""
import torch
import torch.nn.functional as F


def separable_batch(batch, hw, num_classes, seed=0):
    """A batch a small network can fit: blocky labels, colours that encode them."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes, (batch, 1, 4, 4), generator=g).float()
    target = F.interpolate(coarse, size=(hw, hw), mode="nearest")[:, 0].long()
    colours = torch.randn(num_classes, 3, generator=g)
    rgb = colours[target].permute(0, 3, 1, 2) + 0.1 * torch.randn(batch, 3, hw, hw, generator=g)
    return {"rgb": rgb, "x": (target == 1).float().unsqueeze(1)}, target
