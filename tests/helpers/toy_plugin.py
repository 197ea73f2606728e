"""A tiny RGB-X dataset registered as a suite plugin, for fast harness tests.

The label is learnable only from both modalities together: class = (rgb bright) + 2 * (x bright)
per 4x4 block, so single-modality models cannot exceed chance on the other bit. Options:
``size``, ``num_samples``, ``nan_after`` (inputs become NaN from that sample index on, to make
the loss diverge), ``fail`` (raise in __getitem__).
"""
import torch

from bench.data import DatasetInfo, register_dataset


@register_dataset("toy_rgbx")
class ToyRGBX(torch.utils.data.Dataset):
    info = DatasetInfo("toy_rgbx", {"rgb": 3, "x": 1}, ["c0", "c1", "c2", "c3"],
                       palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)])

    def __init__(self, split="train", augment=None, corruption=None, size=16, num_samples=None,
                 nan_after=None, fail=False, seed=0):
        self.split, self.size, self.corruption = split, size, corruption
        self.num = num_samples or {"train": 64, "val": 16, "test": 16}[split]
        self.offset = {"train": 0, "val": 10_000, "test": 20_000}[split] + seed * 100_000
        self.nan_after, self.fail = nan_after, fail

    def __len__(self):
        return self.num

    def __getitem__(self, index):
        if self.fail:
            raise OSError(f"cannot read sample {index}: truncated file")
        gen = torch.Generator().manual_seed(self.offset + index)
        blocks = self.size // 4
        a = torch.randint(0, 2, (blocks, blocks), generator=gen)
        b = torch.randint(0, 2, (blocks, blocks), generator=gen)

        def up(t):
            return t.repeat_interleave(4, 0).repeat_interleave(4, 1)

        rgb = up(a).float().expand(3, -1, -1) + 0.1 * torch.randn(3, self.size, self.size,
                                                                     generator=gen)
        x = up(b).float()[None] + 0.1 * torch.randn(1, self.size, self.size, generator=gen)
        if self.corruption == "x_missing":
            x = torch.zeros_like(x)
        if self.nan_after is not None and index >= self.nan_after:
            rgb = torch.full_like(rgb, float("nan"))
        return {"rgb": rgb, "x": x, "label": up(a + 2 * b).long(), "name": f"toy{index}"}
