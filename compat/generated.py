"""Seeded random models built from the op families Torch-TensorRT's lowering touches, for compat/campaign.py.

Model ``index`` of seed ``seed`` is the same on every run and machine: a chain of 3-7 steps on an (N, C, H, W)
tensor, each step drawn from one family --

* views: view / reshape / permute / transpose / flatten round trips, ``.contiguous()`` before ``.view()``;
* clones and in-place ops: a clone changed in place, in-place ops on intermediate values and (as the first step)
  on the graph's input, ``contiguous()`` / ``detach()`` aliases changed in place;
* slicing and index assignment: strided and negative slices, ``narrow``, overlapping slice writes, ``index_select``,
  ``masked_fill``, ``x[:, 0] += ...``;
* pools with and without indices: max pools (padding, dilation, ceil mode), max pool + unpool, indices used as
  values, average pools (ceil mode, count_include_pad), adaptive pools, 1-D pools over flattened views;
* ``.item()`` of parameters and buffers (directly, through ``clone()`` and ``detach()``): Dynamo keeps those in the
  graph only with ``capture_scalar_outputs``, which the campaign turns on for these models;
* dtype casts: half, bfloat16 and double round trips, integer truncation, comparisons cast to float;
* scaled dot-product attention (causal, boolean and additive masks);
* and convolutions, linear layers, batch norms and activations between them, so values mix.

Each candidate step is run in eager PyTorch while the model is built; one that fails or leaves a tensor too small
is drawn again. ``describe(seed, index).text`` spells the steps out, enough to rebuild a reproducer by hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

Shape = Tuple[int, int, int, int]
# A candidate: (text, forward(step, x), modules and tensors the step owns).
Candidate = Tuple[str, Callable[[Any, torch.Tensor], torch.Tensor], dict]


@dataclass(frozen=True)
class Spec:
    name: str
    text: str
    scalar_capture: bool


class Step(torch.nn.Module):
    """One drawn step: its own parameters and buffers, and the function that applies it."""

    def __init__(self, text: str, apply: Callable[[Any, torch.Tensor], torch.Tensor], owned: dict):
        super().__init__()
        self.text = text
        self.apply_step = apply
        for name, value in owned.items():
            if isinstance(value, torch.nn.Parameter):
                self.register_parameter(name, value)
            elif isinstance(value, torch.Tensor):
                self.register_buffer(name, value)
            else:
                setattr(self, name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_step(self, x)


class GeneratedModel(torch.nn.Module):
    def __init__(self, steps: List[Step]):
        super().__init__()
        self.steps = torch.nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


def _k(rng: random.Random) -> float:
    return rng.choice([0.5, 2.0, -1.0, 3.0, 0.25, -0.5])


# -- the families -------------------------------------------------------------------------------------------------
def views(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    n, c, h, w = shape
    return rng.choice(
        [
            (
                f"x = x.view({n}, {c}, {h * w}).view({n}, {c}, {h}, {w})",
                lambda s, x: x.view(n, c, h * w).view(n, c, h, w),
                {},
            ),
            (
                f"x = x.reshape({n}, {c * h}, {w}).reshape({n}, {c}, {h}, {w})",
                lambda s, x: x.reshape(n, c * h, w).reshape(n, c, h, w),
                {},
            ),
            (
                "x = x.permute(0, 2, 3, 1).contiguous().view(n, h*w, c).view(n, h, w, c).permute(0, 3, 1, 2)",
                lambda s, x: x.permute(0, 2, 3, 1).contiguous().view(n, h * w, c).view(n, h, w, c).permute(0, 3, 1, 2),
                {},
            ),
            ("x = x.transpose(2, 3)", lambda s, x: x.transpose(2, 3), {}),
            (
                "x = x.transpose(1, 2).contiguous().view(n, h, c*w).view(n, h, c, w).transpose(1, 2)",
                lambda s, x: x.transpose(1, 2).contiguous().view(n, h, c * w).view(n, h, c, w).transpose(1, 2),
                {},
            ),
            ("x = x.flatten(2).unflatten(2, (h, w))", lambda s, x: x.flatten(2).unflatten(2, (h, w)), {}),
            (
                "x = x[:, :, None].expand(n, c, 2, h, w).sum(2)",
                lambda s, x: x[:, :, None].expand(n, c, 2, h, w).sum(2),
                {},
            ),
        ]
    )


def clones_and_in_place(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    k, k2 = _k(rng), _k(rng)
    options: List[Candidate] = [
        (f"y = x.clone(); y.mul_({k}); x = x + y", _clone_mul(k), {}),
        (f"y = x.clone(); y[:, :, 0] = {k}; x = x + y", _clone_write(k), {}),
        (f"y = x.contiguous(); y.add_({k}); x = x * y", _contiguous_add(k), {}),
        (f"y = x.detach(); x = x * {k}; y.add_({k2}); x = x + y", _detach_add(k, k2), {}),
        (f"x = (x * {k}).add_({k2}).clamp_(min=-1.0)", lambda s, x: (x * k).add_(k2).clamp_(min=-1.0), {}),
        (f"x = x.transpose(2, 3).contiguous(); x.mul_({k}); x = x.transpose(2, 3)", _transposed_mul(k), {}),
    ]
    if first:
        options.append((f"x.add_({k}); x = x * 2 (the graph's input, in place)", _input_add(k), {}))
    return rng.choice(options)


def _clone_mul(k: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.mul_(k)
        return x + y

    return apply


def _clone_write(k: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[:, :, 0] = k
        return x + y

    return apply


def _contiguous_add(k: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.contiguous()
        y.add_(k)
        return x * y

    return apply


def _detach_add(k: float, k2: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.detach()
        x = x * k
        y.add_(k2)
        return x + y

    return apply


def _transposed_mul(k: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(2, 3).contiguous()
        x.mul_(k)
        return x.transpose(2, 3)

    return apply


def _input_add(k: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        x.add_(k)
        return x * 2

    return apply


def slicing(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    n, c, h, w = shape
    k = _k(rng)
    length = rng.randint(1, max(1, h - 1))
    source, target = rng.randint(0, h - length), rng.randint(0, h - length)
    start = rng.randint(0, max(0, w - 2))
    keep = rng.randint(2, max(2, w))
    threshold = rng.choice([0.0, 0.5, -0.25])
    index = torch.tensor(sorted(rng.sample(range(h), rng.randint(1, h))) + [0])
    return rng.choice(
        [
            (
                f"x = x.clone(); x[:, :, {target}:{target + length}] = x[:, :, {source}:{source + length}] * {k}",
                _slice_write(source, target, length, k),
                {},
            ),
            ("x = x[:, :, ::2]", lambda s, x: x[:, :, ::2], {}),
            (f"x = x[..., -{keep}:]", lambda s, x: x[..., -keep:], {}),
            ("x = x[:, :, 1:-1]", lambda s, x: x[:, :, 1:-1], {}),
            (f"x = x.narrow(3, {start}, {w - start})", lambda s, x: x.narrow(3, start, w - start), {}),
            (f"x = torch.roll(x, {length}, 2)", lambda s, x: torch.roll(x, length, 2), {}),
            (
                f"x = x.masked_fill(x > {threshold}, {k})",
                lambda s, x: x.masked_fill(x > threshold, k),
                {},
            ),
            (f"x = x.index_select(2, {index.tolist()})", lambda s, x: x.index_select(2, s.index), {"index": index}),
            ("x = x.clone(); x[:, 0] += x[:, -1]", _add_into_channel, {}),
        ]
    )


def _slice_write(source: int, target: int, length: int, k: float) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :, target : target + length] = x[:, :, source : source + length] * k
        return x

    return apply


def _add_into_channel(s: Any, x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, 0] += x[:, -1]
    return x


def pools(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    n, c, h, w = shape
    kernel = rng.choice([2, 3])
    stride = rng.choice([1, 2, kernel])
    padding = rng.choice([0, kernel // 2])
    dilation = rng.choice([1, 1, 2])
    ceil = rng.choice([False, True])
    include_pad = rng.choice([False, True])
    out_h, out_w = rng.randint(1, max(1, h // 2)), rng.randint(1, max(1, w // 2))
    max_pool = torch.nn.MaxPool2d(kernel, stride, padding, dilation=dilation, ceil_mode=ceil)
    avg_pool = torch.nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include_pad)
    with_indices = torch.nn.MaxPool2d(kernel, stride, return_indices=True, ceil_mode=ceil)
    return rng.choice(
        [
            (f"x = {max_pool}(x)", lambda s, x: s.pool(x), {"pool": max_pool}),
            (f"x = {avg_pool}(x)", lambda s, x: s.pool(x), {"pool": avg_pool}),
            (
                f"y, i = MaxPool2d({kernel}, {stride}, return_indices=True)(x); x = MaxUnpool2d(...)(y, i, x.shape)",
                _pool_unpool,
                {
                    "pool": torch.nn.MaxPool2d(kernel, stride, return_indices=True),
                    "unpool": torch.nn.MaxUnpool2d(kernel, stride),
                },
            ),
            (
                f"y, i = {with_indices}(x); x = y + (i % 7).to(y.dtype) * 0.125",
                _indices_as_values,
                {"pool": with_indices},
            ),
            (
                f"x = AdaptiveAvgPool2d(({out_h}, {out_w}))(x)",
                lambda s, x: s.pool(x),
                {"pool": torch.nn.AdaptiveAvgPool2d((out_h, out_w))},
            ),
            (
                f"x = AdaptiveMaxPool2d(({out_h}, {out_w}))(x)",
                lambda s, x: s.pool(x),
                {"pool": torch.nn.AdaptiveMaxPool2d((out_h, out_w))},
            ),
            (
                f"y, i = AdaptiveMaxPool2d(({out_h}, {out_w}), return_indices=True)(x); x = y * (i > {h * w // 2})",
                _adaptive_indices(h * w // 2),
                {"pool": torch.nn.AdaptiveMaxPool2d((out_h, out_w), return_indices=True)},
            ),
            (
                f"x = F.max_pool1d(x.flatten(2), {kernel}, ceil_mode={ceil}).unsqueeze(2)",
                lambda s, x: F.max_pool1d(x.flatten(2), kernel, ceil_mode=ceil).unsqueeze(2),
                {},
            ),
        ]
    )


def _pool_unpool(s: Any, x: torch.Tensor) -> torch.Tensor:
    y, indices = s.pool(x)
    return s.unpool(y, indices, output_size=x.shape[-2:])


def _indices_as_values(s: Any, x: torch.Tensor) -> torch.Tensor:
    y, indices = s.pool(x)
    return y + (indices % 7).to(y.dtype) * 0.125


def _adaptive_indices(limit: int) -> Callable:
    def apply(s: Any, x: torch.Tensor) -> torch.Tensor:
        y, indices = s.pool(x)
        return y * (indices > limit)

    return apply


def items(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    value = torch.tensor(rng.choice([0.5, 1.5, -2.0, 3.0]))
    return rng.choice(
        [
            ("x = x * self.p.item()", lambda s, x: x * s.p.item(), {"p": torch.nn.Parameter(value)}),
            ("x = x + self.p.clone().item()", lambda s, x: x + s.p.clone().item(), {"p": torch.nn.Parameter(value)}),
            ("x = x * self.p.detach().item()", lambda s, x: x * s.p.detach().item(), {"p": torch.nn.Parameter(value)}),
            ("x = x - self.b.item() (a buffer)", lambda s, x: x - s.b.item(), {"b": value}),
        ]
    )


def casts(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    return rng.choice(
        [
            ("x = x.half().float()", lambda s, x: x.half().float(), {}),
            ("x = x.to(torch.bfloat16).to(torch.float32)", lambda s, x: x.to(torch.bfloat16).to(torch.float32), {}),
            ("x = x.double().sin().float()", lambda s, x: x.double().sin().float(), {}),
            (
                "x = (x * 4).to(torch.int32).to(torch.float32)",
                lambda s, x: (x * 4).to(torch.int32).to(torch.float32),
                {},
            ),
            ("x = (x > 0).float() * x", lambda s, x: (x > 0).float() * x, {}),
            ("x = x.to(torch.int64).float() + x", lambda s, x: x.to(torch.int64).float() + x, {}),
        ]
    )


def attention(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    n, c, h, w = shape
    k = _k(rng)
    mask = torch.rand(h, h, generator=torch.Generator().manual_seed(rng.randint(0, 2**31))) > 0.3
    mask[:, 0] = True  # every query attends to something: a fully masked row is NaN in eager
    return rng.choice(
        [
            (f"x = sdpa(x, x * {k}, x)", lambda s, x: F.scaled_dot_product_attention(x, x * k, x), {}),
            (
                "x = sdpa(x, x, x, is_causal=True)",
                lambda s, x: F.scaled_dot_product_attention(x, x, x, is_causal=True),
                {},
            ),
            (
                "x = sdpa(x, x, x, attn_mask=<bool mask>)",
                lambda s, x: F.scaled_dot_product_attention(x, x, x, attn_mask=s.mask),
                {"mask": mask},
            ),
            (
                "x = sdpa(x, x, x, attn_mask=<additive float mask>)",
                lambda s, x: F.scaled_dot_product_attention(x, x, x, attn_mask=s.mask),
                {"mask": torch.where(mask, 0.0, -1.0e4)},
            ),
        ]
    )


def mixers(rng: random.Random, shape: Shape, first: bool) -> Candidate:
    n, c, h, w = shape
    channels = rng.randint(2, 6)
    norm = torch.nn.BatchNorm2d(c).eval()
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    activation = rng.choice(["relu", "gelu", "sigmoid", "tanh"])
    return rng.choice(
        [
            (
                f"x = Conv2d({c}, {channels}, 3, padding=1)(x)",
                lambda s, x: s.conv(x),
                {"conv": torch.nn.Conv2d(c, channels, 3, padding=1)},
            ),
            (f"x = Linear({w}, {w})(x)", lambda s, x: s.linear(x), {"linear": torch.nn.Linear(w, w)}),
            (f"x = BatchNorm2d({c})(x) (eval)", lambda s, x: s.norm(x), {"norm": norm}),
            (f"x = torch.{activation}(x)", lambda s, x: getattr(torch, activation)(x), {}),
        ]
    )


# How often each family is drawn: .item() and dtype casts are single ops, the others come in many forms.
FAMILIES = {views: 3, clones_and_in_place: 3, slicing: 3, pools: 3, items: 1, casts: 2, attention: 2, mixers: 3}


# -- building -------------------------------------------------------------------------------------------------------
def _valid(shape: Tuple[int, ...]) -> bool:
    return len(shape) == 4 and min(shape[2:]) >= 2 and shape[1] >= 1 and 8 <= _numel(shape) <= 4096


def _numel(shape: Tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def _draw(seed: int, index: int) -> Tuple[GeneratedModel, torch.Tensor, List[str], bool]:
    rng = random.Random(f"trt_compat campaign {seed}:{index}")
    torch.manual_seed(rng.randint(0, 2**31))
    shape: Shape = (rng.choice([1, 2]), rng.randint(2, 4), rng.randint(6, 12), rng.randint(6, 12))
    generator = torch.Generator().manual_seed(rng.randint(0, 2**31))
    x = torch.randn(*shape, generator=generator)
    if rng.random() < 0.5:
        x = (x * 4).round() / 4  # ties, for max pools and their indices
    steps: List[Step] = []
    scalar_capture = False
    probe = x.clone()
    for number in range(rng.randint(3, 7)):
        for _attempt in range(20):
            family = rng.choices(list(FAMILIES), weights=list(FAMILIES.values()))[0]
            text, apply, owned = family(rng, tuple(probe.shape), number == 0)
            step = Step(text, apply, owned).eval()
            try:
                with torch.no_grad():
                    out = step(probe.clone())
            except Exception:
                continue
            if not isinstance(out, torch.Tensor) or not _valid(tuple(out.shape)) or out.dtype != torch.float32:
                continue
            steps.append(step)
            scalar_capture = scalar_capture or family is items
            probe = out
            break
    return GeneratedModel(steps).eval(), x, [step.text for step in steps], scalar_capture


def build(seed: int, index: int) -> Tuple[GeneratedModel, Tuple[torch.Tensor]]:
    """Model ``index`` of ``seed`` and its input, fresh (the same numbers every time)."""
    model, x, _, _ = _draw(seed, index)
    return model, (x,)


def describe(seed: int, index: int) -> Spec:
    model, x, texts, scalar_capture = _draw(seed, index)
    return Spec(f"gen-{seed}-{index:04d}", f"input {list(x.shape)}: " + "; ".join(texts), scalar_capture)


def name_of(seed: int, index: int) -> str:
    return f"gen-{seed}-{index:04d}"


def find(name: str) -> Optional[Tuple[int, int]]:
    """(seed, index) of a generated model's name, or None."""
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "gen" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])
