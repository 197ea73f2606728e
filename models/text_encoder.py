"""Pluggable text encoders for referring models: token ids (B, T) -> ``TextFeatures``.

Two kinds, chosen by ``build_text_encoder(spec)`` (a model's ``text_encoder`` keyword, in a suite
``train.model_kwargs: {text_encoder: {...}}``):

- ``WordTransformer`` (default): a pre-LN transformer trained from scratch over a word vocabulary
  (the datasets' word ids: SynRef's fixed ``VOCAB``, RefCOCO's ``tokenizer: words``). Named
  shapes in ``TEXT_CONFIGS``; ``clip_l`` has exactly the shape of CLIP ViT-L/14's text tower
  (49408 x 768 token table, 77 positions, 12 causal blocks of width 768 with 12 heads and MLP
  3072, final LN; pooled = the last real token, CLIP's EOS feature): 123,060,480 parameters, the
  size of the HF ``CLIPTextModel`` ReMamber trains, but initialised randomly.
- ``HFTextEncoder`` (``{hf_path: /local/model}``): any Hugging Face text model read from a local
  folder with ``transformers`` (``AutoModel``, ``local_files_only``; a CLIP checkpoint loads its
  text tower). The token ids must come from that model's tokenizer (SynRef ``tokenizer:
  {hf_path: ...}``, RefCOCO ``tokenizer: clip``). Pooled = the model's ``pooler_output`` when it
  has one (CLIP: EOS token after the final LN, what ReMamber feeds its global text branch), else
  the first token (ReMamber's fallback ``l_feats[..., 0]``).

Token id 0 is padding for both (the datasets pad with 0); ``mask`` marks the real tokens.
Attention is written with explicit matmuls so fvcore counts its MACs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from models.errors import UserError

#: named WordTransformer shapes
TEXT_CONFIGS = {
    "clip_l": dict(vocab_size=49408, dim=768, depth=12, heads=12, mlp_ratio=4.0, max_len=77,
                   causal=True, pool="last"),
    "small": dict(vocab_size=512, dim=128, depth=2, heads=4, mlp_ratio=4.0, max_len=32),
    "micro": dict(vocab_size=512, dim=64, depth=2, heads=4, mlp_ratio=2.0, max_len=32),
    "nano": dict(vocab_size=512, dim=32, depth=1, heads=2, mlp_ratio=2.0, max_len=32),
}


class TextEncoderError(UserError, ValueError):
    """A text encoder that cannot be built (unknown config, transformers missing, bad path)."""


@dataclass
class TextFeatures:
    """Per-token features (B, T, D), the real-token mask (B, T) bool, and a pooled (B, D)."""
    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    @property
    def dim(self) -> int:
        return self.tokens.shape[-1]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise TextEncoderError(f"text dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (d // self.heads) ** -0.5 + bias
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attn(LN x), x + MLP(LN x) (CLIP's text blocks, GELU MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class WordTransformer(nn.Module):
    """Token + learned position embeddings, ``depth`` pre-LN blocks, final LN."""

    def __init__(self, vocab_size: int = 512, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, max_len: int = 32, causal: bool = False,
                 pool: str = "mean"):
        super().__init__()
        if pool not in ("mean", "last"):
            raise TextEncoderError(f"text encoder pool must be 'mean' or 'last', got {pool!r}")
        self.vocab_size, self.max_len, self.causal, self.pool = vocab_size, max_len, causal, pool
        self.out_dim = dim
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(max_len, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)  # CLIP's initialisation
        nn.init.normal_(self.pos_embed, std=0.01)

    def forward(self, ids: torch.Tensor) -> TextFeatures:
        b, t = ids.shape
        if t > self.max_len:
            raise TextEncoderError(f"{t} tokens exceed the text encoder's max_len {self.max_len}")
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise TextEncoderError(
                f"token id {int(ids.max())} >= the text encoder's vocab_size {self.vocab_size}; "
                "set model_kwargs: {text_encoder: {vocab_size: N}} to the tokenizer's size")
        mask = ids.gt(0)
        # weight[ids] is the embedding lookup; indexing keeps fvcore's op table happy (0 MACs)
        x = self.token_embed.weight[ids] + self.pos_embed[:t]
        keep = mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, T): padded keys get -1e9
        if self.causal:
            keep = keep * torch.ones(t, t, device=ids.device, dtype=x.dtype).tril()
        bias = (1.0 - keep) * -1e9
        for block in self.blocks:
            x = block(x, bias)
        x = self.norm(x)
        weights = mask.to(x.dtype)
        if self.pool == "mean":
            pooled = (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        else:  # the last real token (CLIP's EOS); position 0 for an empty expression
            last = (weights.sum(1).long() - 1).clamp(min=0)
            pooled = x[torch.arange(b, device=ids.device), last]
        return TextFeatures(x, mask, pooled)


class HFTextEncoder(nn.Module):
    """A Hugging Face text model from a local folder (module docstring)."""

    def __init__(self, hf_path: str, trainable: bool = True):
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise TextEncoderError(
                "text_encoder hf_path needs the transformers package (pip install "
                "transformers); or leave hf_path out for the built-in word transformer") from None
        path = Path(hf_path).expanduser()
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"{path}: no Hugging Face model here (config.json not found); "
                                   "hf_path must be a local folder saved with save_pretrained")
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if getattr(config, "model_type", "") == "clip":  # the text tower of a full CLIP
            self.model = transformers.CLIPTextModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        self.out_dim = int(self.model.config.hidden_size)
        for p in self.model.parameters():
            p.requires_grad_(trainable)

    def forward(self, ids: torch.Tensor) -> TextFeatures:
        mask = ids.gt(0)
        out = self.model(input_ids=ids, attention_mask=mask.long())
        tokens = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = tokens[:, 0]
        return TextFeatures(tokens, mask, pooled)


def build_text_encoder(spec: dict | str | None, default: str | dict = "micro") -> nn.Module:
    """``spec``: None (the ``default`` config), a ``TEXT_CONFIGS`` name, or a dict: ``{hf_path:
    ..., trainable: true}`` for a Hugging Face model, else ``{config: name, <WordTransformer
    keyword>: value, ...}`` overriding the named config."""
    if spec is None:
        spec = default
    if isinstance(spec, str):
        spec = {"config": spec}
    spec = dict(spec)
    if "hf_path" in spec:
        unknown = sorted(set(spec) - {"hf_path", "trainable"})
        if unknown:
            raise TextEncoderError(f"text_encoder with hf_path takes hf_path and trainable, "
                                   f"not {', '.join(unknown)}")
        return HFTextEncoder(spec["hf_path"], spec.get("trainable", True))
    base = spec.pop("config", default if isinstance(default, str) else None)
    settings = dict(default) if isinstance(default, dict) else {}
    if base is not None:
        if base not in TEXT_CONFIGS:
            raise TextEncoderError(f"unknown text encoder config {base!r} (known: "
                                   f"{', '.join(TEXT_CONFIGS)}; or hf_path: /local/model)")
        settings.update(TEXT_CONFIGS[base])
    settings.update(spec)
    try:
        return WordTransformer(**settings)
    except TypeError as error:
        raise TextEncoderError(f"bad text_encoder setting: {error}") from None


def clip_l_text_params() -> int:
    """CLIP ViT-L/14 text tower's parameter count from its shape (HF CLIPTextModel: 123.06M)."""
    vocab, width, positions, layers, mlp = 49408, 768, 77, 12, 3072
    per_layer = 2 * 2 * width + (width * 3 * width + 3 * width) + (width * width + width) \
        + (width * mlp + mlp) + (mlp * width + width)
    return vocab * width + positions * width + layers * per_layer + 2 * width


__all__ = ["TextFeatures", "WordTransformer", "HFTextEncoder", "build_text_encoder",
           "TEXT_CONFIGS", "TextEncoderError", "clip_l_text_params"]
