"""The five stateful models of the deployment path (project issue #21) and how to compare them with eager mode.

Plain torch, no harness: the unit tests (CPU torch) and the integration tests (the real wheels) share them.

* ``counter``: a step counter buffer, ``self.count.add_(1)``, read by the output;
* ``counter_returned``: the same, and the model returns the buffer it updated (upstream #4694 on 2.14.0);
* ``kv_slice``: a decoder's KV-cache write by slice assignment at a fixed position, read afterwards;
* ``kv_index_copy``: a KV-cache write with ``index_copy_`` at the step's position (a tensor), read afterwards;
* ``input_update``: an in-place update of the caller's input, ``x.add_(1)``.

The caches are ``[batch, heads, positions, head_dim]`` with the write along dim 2, the shape Torch-TensorRT 2.14 writes
in place inside an engine (an ``IKVCacheUpdateLayer`` with aliased input and output). Each call's arguments differ, so
an update that is lost shows in the state after the call and, for three of the five, in the outputs of later calls.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_map

CACHE_SHAPE = (1, 2, 6, 4)


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        self.count.add_(1)
        return x * self.count


class CounterReturned(Counter):
    def forward(self, x):
        return super().forward(x), self.count


class KVCache(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(CACHE_SHAPE))


class KVSlice(KVCache):
    def forward(self, k, q):
        self.cache[:, :, 2:3] = k
        return (self.cache * q).sum(-1)


class KVIndexCopy(KVCache):
    def forward(self, k, q, position):
        self.cache.index_copy_(2, position, k)
        return (self.cache * q).sum(-1)


class InputUpdate(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


@dataclass(frozen=True)
class Case:
    model: Callable[[], nn.Module]
    arguments: Callable[[int], tuple]  # call i's arguments (fresh tensors every time they are asked for)


def _step(call: int, shape: Tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 100 + call))


def _k(call: int) -> torch.Tensor:
    return _step(call, (1, 2, 1, 4), 1)


def _q(call: int) -> torch.Tensor:
    return _step(call, (1, 2, 1, 4), 2)


CASES: Dict[str, Case] = {
    "counter": Case(Counter, lambda i: (_step(i, (2, 3), 3),)),
    "counter_returned": Case(CounterReturned, lambda i: (_step(i, (2, 3), 3),)),
    "kv_slice": Case(KVSlice, lambda i: (_k(i), _q(i))),
    "kv_index_copy": Case(KVIndexCopy, lambda i: (_k(i), _q(i), torch.tensor([i]))),
    "input_update": Case(InputUpdate, lambda i: (_step(i, (2, 3), 4),)),
}
CALLS = 3


def clone_arguments(arguments: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in arguments)


def state_of(module: Any, arguments: tuple) -> Dict[str, torch.Tensor]:
    """The caller's tensors and the module's buffers, by name (``buffer count``, ``argument 0``)."""
    state = {f"argument {i}": a.clone() for i, a in enumerate(arguments) if isinstance(a, torch.Tensor)}
    state.update((f"buffer {name.rsplit('.', 1)[-1]}", b.clone()) for name, b in module.named_buffers())
    return state


def leaves(value: Any) -> List[Any]:
    """A call's outputs as a flat list (releases return one output bare, or in a one-element tuple)."""
    from torch.utils._pytree import tree_leaves

    return tree_leaves(value)


def differences(actual: Any, expected: Any, what: str) -> List[str]:
    """What differs between ``actual`` and eager's ``expected``, bit for bit (NaN equal to NaN)."""
    got, want = leaves(actual), leaves(expected)
    if len(got) != len(want):
        return [f"{what}: {len(got)} values instead of {len(want)}"]
    found = []
    for index, (a, b) in enumerate(zip(got, want)):
        if not isinstance(b, torch.Tensor):
            if a != b:
                found.append(f"{what}[{index}]: {a!r} instead of {b!r}")
            continue
        if a.dtype != b.dtype or a.shape != b.shape:
            found.append(f"{what}[{index}]: {a.dtype}{tuple(a.shape)} instead of {b.dtype}{tuple(b.shape)}")
        elif not torch.equal(a, b) and not bool(((a == b) | (a.isnan() & b.isnan())).all()):
            gap = (a.double() - b.double()).abs().max().item()
            found.append(f"{what}[{index}]: differs by up to {gap:g}")
    return found


def eager_calls(case: Case, calls: int = CALLS) -> List[Tuple[Any, Dict[str, torch.Tensor]]]:
    """Eager mode's outputs and state after each call, on a fresh model."""
    torch.manual_seed(0)
    model = case.model().eval()
    results = []
    with torch.no_grad():
        for call in range(calls):
            arguments = case.arguments(call)
            # A copy: a returned buffer is the buffer itself in eager mode, which the next call changes.
            output = tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, model(*arguments))
            results.append((output, state_of(model, arguments)))
    return results


def compare_calls(
    case: Case, module: Any, calls: int = CALLS, state: Callable[[Any, tuple], Dict[str, torch.Tensor]] = state_of
) -> List[str]:
    """Call ``module`` like eager mode ``calls`` times; what differs after each call (outputs, then state)."""
    found = []
    with torch.no_grad():
        for call, (expected, expected_state) in enumerate(eager_calls(case, calls)):
            arguments = case.arguments(call)
            found += differences(module(*arguments), expected, f"call {call} output")
            found += state_differences(state(module, arguments), expected_state, call)
    return found


def compare_served(case: Case, served: Any, calls: int = CALLS) -> List[str]:
    """What differs between the serving process's calls (:class:`trt_compat.probing.Served`) and eager mode's."""
    found = []
    for call, (expected, expected_state) in enumerate(eager_calls(case, calls)):
        found += differences(served.outputs[call], expected, f"call {call} output")
        actual_state = {f"argument {i}": a for i, a in enumerate(served.arguments[call]) if isinstance(a, torch.Tensor)}
        actual_state.update((f"buffer {name.rsplit('.', 1)[-1]}", b) for name, b in served.buffers[call].items())
        found += state_differences(actual_state, expected_state, call)
    return found


def state_differences(actual: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], call: int) -> List[str]:
    """What differs between the state after call ``call`` and eager mode's (a tensor eager has and this lacks too)."""
    found = []
    for key, value in expected.items():
        if key not in actual:
            found.append(f"call {call} {key}: missing")
        else:
            found += differences(actual[key], value, f"call {call} {key}")
    return found
