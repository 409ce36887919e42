"""Real models for the dryrun-compile benchmarks: torchvision, timm and transformers (random weights, small inputs),
and the small pool cases behind the TensorRT block counts. Every builder seeds torch, so two builds are identical.

Each entry of ``MODELS`` builds ``(model, inputs)``; the model is in evaluation mode. transformers models are built
from a small config, never downloaded (``HF_HUB_OFFLINE=1`` is set before transformers is imported).
"""

from __future__ import annotations

import inspect
import os
from typing import Callable, Dict, Tuple

import torch

nn = torch.nn


def _seeded(build: Callable[[], Tuple[nn.Module, tuple]]) -> Callable[[], Tuple[nn.Module, tuple]]:
    def seeded() -> Tuple[nn.Module, tuple]:
        torch.manual_seed(0)
        model, inputs = build()
        return model.eval(), inputs

    seeded.__doc__ = build.__doc__
    return seeded


def _image(size: int = 64) -> tuple:
    return (torch.randn(1, 3, size, size),)


def _torchvision(name: str, **kwargs) -> Callable[[], Tuple[nn.Module, tuple]]:
    def build() -> Tuple[nn.Module, tuple]:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kwargs), _image(kwargs.get("image_size", 64))

    return _seeded(build)


def _timm(name: str, **kwargs) -> Callable[[], Tuple[nn.Module, tuple]]:
    def build() -> Tuple[nn.Module, tuple]:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs), _image()

    return _seeded(build)


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    return transformers


class _Logits(nn.Module):
    """A causal language model called with explicit attention mask and position ids, returning the logits.

    Explicit: with the default mask, 2.12+ fail inside the harness (a folded mask constant reaches attention as a
    fake tensor on cuda:0), which is not what these benchmarks measure.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits


def gpt2(layers: int = 4) -> Tuple[nn.Module, tuple]:
    """GPT-2 with ``layers`` layers, width 64, 16 tokens."""

    def build() -> Tuple[nn.Module, tuple]:
        t = _transformers()
        config = t.GPT2Config(n_layer=layers, n_embd=64, n_head=4, n_positions=64, vocab_size=512)
        tokens = 16
        return _Logits(t.GPT2LMHeadModel(config)), (
            torch.randint(0, 512, (1, tokens)),
            torch.ones(1, tokens, dtype=torch.long),
            torch.arange(tokens).unsqueeze(0),
        )

    return _seeded(build)()


class _DecodeStep(nn.Module):
    """One decoding step of a causal LM into a static KV cache held as buffers (the cache is written in place)."""

    def __init__(self, model: nn.Module, cache):
        super().__init__()
        self.model, self.cache = model, cache
        for index, layer in enumerate(getattr(cache, "layers", None) or ()):
            for name in ("keys", "values"):
                if isinstance(getattr(layer, name, None), torch.Tensor):
                    self.register_buffer(f"cache_{index}_{name}", getattr(layer, name))
        for index, tensors in enumerate(zip(getattr(cache, "key_cache", ()), getattr(cache, "value_cache", ()))):
            for name, tensor in zip(("keys", "values"), tensors):
                self.register_buffer(f"cache_{index}_{name}", tensor)

    def forward(self, input_ids, cache_position):
        return self.model(
            input_ids=input_ids, past_key_values=self.cache, cache_position=cache_position, use_cache=True
        ).logits


@_seeded
def llama_static_cache():
    """Llama, 2 layers, width 64, one decoding step at position 8 into a 32-token StaticCache (writes the cache)."""
    t = _transformers()
    config = t.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=64,
    )
    model = t.LlamaForCausalLM(config)
    wanted = {
        "config": config,
        "max_cache_len": 32,
        "max_batch_size": 1,
        "batch_size": 1,
        "dtype": torch.float32,
        "device": "cpu",
    }
    accepted = inspect.signature(t.StaticCache.__init__).parameters
    cache = t.StaticCache(**{key: value for key, value in wanted.items() if key in accepted})
    # Lazily allocated caches (transformers 5) get their tensors at the first write: one eager step before compiling.
    with torch.no_grad():
        model(input_ids=torch.tensor([[1]]), past_key_values=cache, cache_position=torch.tensor([0]), use_cache=True)
    step = _DecodeStep(model, cache)
    return step, (torch.tensor([[7]]), torch.tensor([8]))


# In the order the benchmarks run them: the largest graph (DenseNet-121) last.
MODELS: Dict[str, Callable[[], Tuple[nn.Module, tuple]]] = {
    "resnet18": _torchvision("resnet18"),
    "googlenet": _torchvision("googlenet", aux_logits=False, init_weights=False),
    "llama_static_cache": llama_static_cache,
    "timm_resnet18d_avgmax": _timm("resnet18d", global_pool="avgmax"),
    "gpt2": gpt2,
    "timm_ese_vovnet19b_dw": _timm("ese_vovnet19b_dw"),
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "vit_b_16": _torchvision("vit_b_16", image_size=32),
    "timm_convnext_atto": _timm("convnext_atto"),
    "densenet121": _torchvision("densenet121"),
}


# ---------------------------------------------------------------------------------------------------------------
# Small pool cases: a pool the converters reject with little or nothing around it


class _Lambda(nn.Module):
    def __init__(self, forward: Callable, *modules: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.body = forward

    def forward(self, x):
        return self.body(self, x)


def _case(what: str, forward: Callable, shape: Tuple[int, ...], *modules: Callable[[], nn.Module]):
    build = _seeded(lambda: (_Lambda(forward, *(make() for make in modules)), (torch.randn(*shape),)))
    build.__doc__ = what
    return build


F = nn.functional

# Each builder's docstring says what the case computes.
SMALL_CASES: Dict[str, Callable[[], Tuple[nn.Module, tuple]]] = {
    "dilated_max_pool2d_mul": _case(
        "max_pool2d(x, 2, 1, dilation=2) * 2", lambda m, x: F.max_pool2d(x, 2, 1, dilation=2) * 2, (1, 3, 16, 16)
    ),
    "ceil_avg_pool2d_add": _case(
        "avg_pool2d(x, 3, 2, ceil_mode=True) + 1",
        lambda m, x: F.avg_pool2d(x, 3, 2, ceil_mode=True) + 1,
        (1, 3, 16, 16),
    ),
    "dilated_ceil_max_pool3d_mul": _case(
        "max_pool3d(x, 2, 1, dilation=2, ceil_mode=True) * 2",
        lambda m, x: F.max_pool3d(x, 2, 1, dilation=2, ceil_mode=True) * 2,
        (1, 2, 9, 9, 9),
    ),
    "conv_dilated_max_pool2d_sort": _case(
        "sort(max_pool2d(conv(x), 2, 1, dilation=2), -1)",
        lambda m, x: torch.sort(F.max_pool2d(m.parts[0](x), 2, 1, dilation=2), dim=-1)[0],
        (1, 3, 16, 16),
        lambda: nn.Conv2d(3, 4, 3, padding=1),
    ),
}
