"""The campaign's real model families beside torchvision: timm and transformers, random weights, small inputs.

Nothing is downloaded: timm models are created with ``pretrained=False``, transformers models from small configs
(``HF_HUB_OFFLINE=1``). Versions are pinned per torch in :mod:`compat.model_libraries`. A family whose library is not
installed has no cases (the campaign says so); a model the installed library does not have is reported as not run.

transformers: GPT-2, BERT, T5, Llama and Mistral with their default attention mask (no mask passed), and Llama with
a ``StaticCache`` as a deployment runs it: prefill of four tokens, then two decode steps of one token, the cache's
tensors registered as buffers of the wrapper (the state compared after the calls, with the decode logits).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Tuple

from compat import variants

# name -> (timm model name, create_model kwargs, input shape, what it exercises)
TIMM: Dict[str, Tuple[str, Dict[str, Any], Tuple[int, ...], str]] = {
    "timm_resnet18_catavgmax": ("resnet18", {"global_pool": "catavgmax"}, (1, 3, 64, 64), "catavgmax global pool"),
    "timm_resnet26d_avgmax": ("resnet26d", {"global_pool": "avgmax"}, (1, 3, 64, 64), "ceil-mode avg_down, avgmax"),
    "timm_legacy_seresnet18": ("legacy_seresnet18", {}, (1, 3, 64, 64), "ceil-mode max pools, SE"),
    "timm_legacy_xception": ("legacy_xception", {"global_pool": "catavgmax"}, (1, 3, 80, 80), "xception, catavgmax"),
    "timm_inception_v3_avgmax": ("inception_v3", {"global_pool": "avgmax"}, (1, 3, 80, 80), "inception, avgmax"),
    "timm_ese_vovnet19b_dw": ("ese_vovnet19b_dw", {}, (1, 3, 64, 64), "ceil-mode max pools (vovnet)"),
    "timm_hgnetv2_b0": ("hgnetv2_b0", {}, (1, 3, 64, 64), "ceil-mode stem pool (hgnet)"),
    "timm_regnetx_002": ("regnetx_002", {}, (1, 3, 64, 64), "regnet"),
    "timm_mobilenetv3_small_050": ("mobilenetv3_small_050", {}, (1, 3, 64, 64), "hard-swish, SE"),
    "timm_tf_efficientnet_b0": ("tf_efficientnet_b0", {}, (1, 3, 64, 64), "TF 'same' padding"),
    "timm_vit_tiny": ("vit_tiny_patch16_224", {"img_size": 32}, (1, 3, 32, 32), "ViT, 4 patches"),
    "timm_convnext_atto": ("convnext_atto", {}, (1, 3, 64, 64), "ConvNeXt, layer norm 2d"),
}

TOKENS = 128  # vocabulary of every small config
SEQUENCE = variants.Dynamic(axes={0: {1: "seq"}}, sizes={"seq": (8, 5, 11)}, bounds={"seq": (2, 16)})


def timm_cases(case_class: Any) -> List[Any]:
    import torch

    try:
        import timm
    except Exception as exc:  # not installed, or not importable with this torch: the family has no cases
        print(f"campaign: no timm models: {type(exc).__name__}: {exc}", file=sys.stderr)
        return []
    available = set(timm.list_models())
    cases = []
    for name, (model_name, kwargs, shape, what) in TIMM.items():

        def build(model_name: str = model_name, kwargs: dict = kwargs, shape: tuple = shape) -> Tuple[Any, tuple]:
            if model_name not in available:
                raise ModelMissing(f"timm {timm.__version__} has no model {model_name}")
            torch.manual_seed(0)
            model = timm.create_model(model_name, pretrained=False, **kwargs).eval()
            return model, (torch.randn(*shape),)

        cases.append(case_class(name, "timm", build, f"{model_name} {kwargs or ''} input {list(shape)}: {what}"))
    return cases


class ModelMissing(variants.NotRunnable):
    """The installed library has no such model (the case is reported as not run)."""


# -- transformers ------------------------------------------------------------------------------------------------
def _config(transformers: Any, kind: str) -> Any:
    small = {"vocab_size": TOKENS}
    if kind == "gpt2":
        return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, **small)
    if kind == "bert":
        return transformers.BertConfig(
            num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            max_position_embeddings=64, **small,
        )  # fmt: skip
    if kind == "t5":
        return transformers.T5Config(
            num_layers=2, num_decoder_layers=2, d_model=64, d_ff=128, num_heads=4, d_kv=16, **small
        )
    decoder = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        **small,
    }
    if kind == "mistral":
        return transformers.MistralConfig(sliding_window=None, **decoder)
    return transformers.LlamaConfig(**decoder)


def _wrapped(transformers: Any, kind: str) -> Any:
    """A module taking token ids and returning the logits (BERT: the last hidden state), default attention mask."""
    import torch

    config = _config(transformers, kind)
    model_class = {
        "gpt2": transformers.GPT2LMHeadModel,
        "bert": transformers.BertModel,
        "t5": transformers.T5ForConditionalGeneration,
        "llama": transformers.LlamaForCausalLM,
        "mistral": transformers.MistralForCausalLM,
    }[kind]
    model = model_class(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: Any) -> Any:
            if kind == "bert":
                return self.model(input_ids=ids).last_hidden_state
            if kind == "t5":
                return self.model(input_ids=ids, decoder_input_ids=ids, use_cache=False).logits
            return self.model(input_ids=ids, use_cache=False).logits

    return Logits().eval()


class _StaticCacheDecoder:
    """Builds the Llama-with-StaticCache module: ``forward(ids, cache_position) -> logits``, the cache tensors its
    buffers (so an in-place cache update is model state, as in a deployment's exported decoder)."""

    MAX_CACHE = 16

    @classmethod
    def build(cls, transformers: Any) -> Any:
        import torch

        config = _config(transformers, "llama")
        model = transformers.LlamaForCausalLM(config).eval()
        cache = cls._cache(transformers, config)
        tensors = cls._tensors(cache, config)

        class Decoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model
                self.cache = cache
                for name, tensor in tensors.items():
                    self.register_buffer(name, tensor, persistent=False)

            def forward(self, ids: Any, cache_position: Any) -> Any:
                return self.model(
                    input_ids=ids,
                    past_key_values=self.cache,
                    cache_position=cache_position,
                    position_ids=cache_position.unsqueeze(0),
                    use_cache=True,
                ).logits

        return Decoder().eval()

    @classmethod
    def _cache(cls, transformers: Any, config: Any) -> Any:
        import inspect

        import torch

        parameters = inspect.signature(transformers.StaticCache.__init__).parameters
        kwargs: Dict[str, Any] = {"config": config, "max_cache_len": cls.MAX_CACHE}
        if "max_batch_size" in parameters:  # 4.x
            kwargs.update(max_batch_size=1, device="cpu", dtype=torch.float32)
        return transformers.StaticCache(**kwargs)

    @staticmethod
    def _tensors(cache: Any, config: Any) -> Dict[str, Any]:
        import torch

        if hasattr(cache, "layers"):  # transformers 5: layers allocate on their first update, so allocate now
            head_dim = config.hidden_size // config.num_attention_heads
            found = {}
            for index, layer in enumerate(cache.layers):
                if not getattr(layer, "is_initialized", True):
                    states = torch.zeros(1, config.num_key_value_heads, 1, head_dim)
                    layer.lazy_initialization(states, states)
                found[f"cache_keys_{index}"] = layer.keys
                found[f"cache_values_{index}"] = layer.values
                if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
                    found[f"cache_length_{index}"] = layer.cumulative_length
            return found
        return {
            **{f"cache_keys_{i}": t for i, t in enumerate(cache.key_cache)},
            **{f"cache_values_{i}": t for i, t in enumerate(cache.value_cache)},
        }


PREFILL = 4


def _decode_inputs(shapes: str, call: int, previous: tuple) -> tuple:
    """The decode steps after the prefill: one fixed token each, at the next cache position."""
    import torch

    position = PREFILL + call - 1
    return torch.tensor([[(7 * position + 3) % TOKENS]]), torch.tensor([position])


TRANSFORMERS = ("gpt2", "bert", "t5", "llama", "mistral")


def transformers_cases(case_class: Any) -> List[Any]:
    import torch

    try:
        import transformers
    except Exception as exc:  # not installed, or not importable with this torch: the family has no cases
        print(f"campaign: no transformers models: {type(exc).__name__}: {exc}", file=sys.stderr)
        return []
    cases = []
    for kind in TRANSFORMERS:

        def build(kind: str = kind) -> Tuple[Any, tuple]:
            torch.manual_seed(0)
            model = _wrapped(transformers, kind)
            ids = torch.randint(0, TOKENS, (1, 8), generator=torch.Generator().manual_seed(1))
            return model, (ids,)

        case = case_class(f"hf_{kind}", "transformers", build, f"{kind}, small config, ids [1, 8], default mask")
        case.dynamic = SEQUENCE
        cases.append(case)

    def build_cached() -> Tuple[Any, tuple]:
        torch.manual_seed(0)
        model = _StaticCacheDecoder.build(transformers)
        ids = torch.randint(0, TOKENS, (1, PREFILL), generator=torch.Generator().manual_seed(1))
        return model, (ids, torch.arange(PREFILL))

    case = case_class(
        "hf_llama_static_cache",
        "transformers",
        build_cached,
        f"llama, StaticCache({_StaticCacheDecoder.MAX_CACHE}): prefill {PREFILL} tokens, then 2 decode steps",
    )
    case.next_inputs = _decode_inputs
    case.shape_changes = True
    case.dynamic = variants.Dynamic(
        axes={0: {1: "seq"}, 1: {0: "seq"}}, sizes={"seq": (PREFILL, 1, 1)}, bounds={"seq": (1, 8)}
    )
    cases.append(case)
    return cases


def cases_of(family: str, case_class: Any) -> List[Any]:
    make: Callable[[Any], List[Any]] = {"timm": timm_cases, "transformers": transformers_cases}[family]
    return make(case_class)
