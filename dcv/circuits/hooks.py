"""Per-head access to any Hugging Face decoder whose attention ends in `self_attn.o_proj` (Qwen2, Llama, Mistral,
Gemma, ...), plain or wrapped by peft.

The input of `o_proj` is the concatenation of the query heads' outputs, [batch, pos, head * d_head]; head h of
layer l is the slice [..., h * d_head : (h + 1) * d_head] (TransformerLens' `blocks.{l}.attn.hook_z`). A forward
pre-hook on each `o_proj` reads it as z [batch, pos, head, d_head] and may replace it. o_proj sees query heads, so
grouped-query attention needs nothing special; a LoRA wrapper keeps the module name and sees the same input.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from dcv.errors import DcvError

SITE = re.compile(r"^(.*?)(\d+)\.self_attn\.o_proj$")

# (layer, z [batch, pos, head, d_head]) -> the z to use instead, or None to leave it as it is
HeadFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@dataclass
class HeadSites:
    """The `o_proj` modules of a decoder in layer order, and its head grid."""

    modules: list[torch.nn.Module]
    n_heads: int
    d_head: int
    layers: list[torch.nn.Module] | None = None  # the decoder layers that hold them (`<...>.<layer>`), same order

    @property
    def n_layers(self) -> int:
        return len(self.modules)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_layers, self.n_heads


def _text_config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def find_heads(model) -> HeadSites:
    """The decoder's `<...>.<layer>.self_attn.o_proj` modules (the stack whose length is the config's layer count
    when a model holds several, e.g. a vision tower) and its number of query heads."""
    stacks: dict[str, dict[int, torch.nn.Module]] = defaultdict(dict)
    layer_of: dict[torch.nn.Module, torch.nn.Module] = {}
    for name, module in model.named_modules():
        m = SITE.match(name)
        if m:
            stacks[m.group(1)][int(m.group(2))] = module
            layer_of[module] = model.get_submodule(m.group(1) + m.group(2))
    cfg = _text_config(model)
    n_layers = getattr(cfg, "num_hidden_layers", None)
    fits = [s for s in stacks.values() if sorted(s) == list(range(len(s)))]
    fits = [s for s in fits if n_layers is None or len(s) == n_layers] or fits
    if len(fits) != 1:
        raise DcvError(f"{type(model).__name__}: expected one stack of decoder layers ending in `self_attn.o_proj`, "
                       f"found {len(fits)}")
    stack = fits[0]
    n_heads = int(cfg.num_attention_heads)
    width = getattr(stack[0], "in_features", None)
    if width is None or width % n_heads:
        raise DcvError(f"{type(model).__name__}: o_proj input width {width} does not split into {n_heads} heads")
    return HeadSites([stack[l] for l in range(len(stack))], n_heads, width // n_heads,
                     [layer_of[stack[l]] for l in range(len(stack))])


@contextlib.contextmanager
def head_hooks(sites: HeadSites, fn: HeadFn) -> Iterator[None]:
    """While open, every forward calls `fn(layer, z)` on each layer's o_proj input; a returned tensor replaces z."""

    def make(layer: int):
        def pre(module, args):
            x = args[0]
            z = x.reshape(*x.shape[:-1], sites.n_heads, sites.d_head)  # [batch, pos, head, d_head]
            out = fn(layer, z)
            return None if out is None else (out.reshape(x.shape), *args[1:])

        return pre

    handles = [m.register_forward_pre_hook(make(l)) for l, m in enumerate(sites.modules)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def logits_at(model, positions: torch.Tensor, sites: HeadSites | None = None) -> Iterator[None]:
    """While open, the LM head sees only the hidden state at `positions[i]` of row i: logits are [batch, 1, vocab].

    Saves the vocabulary projection at every other position (the largest matmul of a small-vocab-heavy model). With
    `sites`, the last decoder layer's `mlp` (where it has one) also runs at those positions only, its output zero
    elsewhere: no later computation reads another position, so the logits there, and every gradient of them, are
    unchanged (the MLP is about a sixth of a 4-layer model's forward).
    """
    head = model.get_output_embeddings()
    handles = []

    def rows_at(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(h.shape[0], device=h.device), positions.to(h.device)

    def pre(module, args):
        h = args[0]  # [batch, pos, d_model]
        rows, at = rows_at(h)
        return (h[rows, at][:, None], *args[1:])

    handles.append(head.register_forward_pre_hook(pre))
    mlp = getattr(sites.layers[-1], "mlp", None) if sites is not None and sites.layers else None
    if isinstance(mlp, torch.nn.Module):
        shape: list = []

        def mlp_in(module, args):
            x = args[0]
            shape[:] = [x.shape]
            rows, at = rows_at(x)
            return (x[rows, at][:, None], *args[1:])

        def mlp_out(module, args, out):
            rows, at = rows_at(out)
            return out.new_zeros(shape[0][:-1] + out.shape[-1:]).index_put((rows, at), out[:, 0])

        handles += [mlp.register_forward_pre_hook(mlp_in), mlp.register_forward_hook(mlp_out)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def layer_outputs(sites: HeadSites) -> Iterator[list]:
    """While open, every forward records each decoder layer's output (as the layer returns it) into the list."""
    outs: list = [None] * sites.n_layers

    def make(layer: int):
        def keep(module, args, output):
            outs[layer] = output

        return keep

    handles = [m.register_forward_hook(make(l)) for l, m in enumerate(sites.layers)]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def skip_below(sites: HeadSites, start: int, outputs: list, repeat: int = 1) -> Iterator[None]:
    """While open, decoder layers below `start` are not computed: layer start - 1 returns `outputs[start - 1]` (its
    recorded output on the same prompts, `layer_outputs`) stacked `repeat` times along the batch, the layers below it
    pass their input on (nothing reads it). Exact when nothing below `start` is patched: the layers there see the
    unpatched input, so they would compute the same values."""

    def stacked(out):
        if isinstance(out, tuple):
            return (out[0].repeat(repeat, *[1] * (out[0].dim() - 1)), *out[1:])
        return out.repeat(repeat, *[1] * (out.dim() - 1))

    def passed(i: int):
        def forward(*args, **kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            return (h,) if isinstance(outputs[i], tuple) else h

        return forward

    saved = []
    for i in range(min(start, sites.n_layers)):
        m = sites.layers[i]
        saved.append((m, m.__dict__.get("forward")))  # an instance forward (accelerate's hooks) is put back
        m.forward = passed(i) if i < start - 1 else (lambda out: lambda *a, **k: stacked(out))(outputs[i])
    try:
        yield
    finally:
        for m, f in saved:
            if f is None:
                del m.forward
            else:
                m.forward = f
