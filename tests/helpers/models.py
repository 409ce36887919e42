"""The three smoke models of the compatibility matrix (tests/integration/test_matrix.py) and the GPU tier
(tests/gpu): plain torch, no harness, so either can import them.

* cnn_pool_indices: pooling whose indices are used (MaxPool2d(return_indices=True) + MaxUnpool2d) and a
  ceil_mode pool between convolutions (#3185 in both its forms);
* transformer_views: a pre-norm transformer block whose attention is written with view/transpose (#3221);
* mixed: a CNN stem with used pooling indices and a ceil_mode pool around a transformer block over the pixels.
"""

import torch


class CNNPoolIndices(torch.nn.Module):
    """Pooling whose indices are used (MaxPool2d(return_indices) + MaxUnpool2d), then a ceil_mode pool."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2, return_indices=True)
        self.unpool = torch.nn.MaxUnpool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.ceil_pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):  # (1, 3, 16, 16)
        y = torch.relu(self.conv1(x))
        y, indices = self.pool(y)
        y = self.unpool(torch.relu(self.conv2(y)), indices)
        return torch.relu(self.conv3(self.ceil_pool(y)))


class Attention(torch.nn.Module):
    """Multi-head self-attention written with view/transpose, as most hand-written transformers do."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        out = scores.softmax(dim=-1) @ v  # (B, H, T, D)
        return self.proj(out.transpose(1, 2).contiguous().view(b, t, c))


class TransformerBlock(torch.nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))

    def forward(self, x):  # (2, 8, 32)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Mixed(torch.nn.Module):
    """A CNN stem with used pooling indices and a ceil_mode pool around a transformer block over the pixels."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2, return_indices=True)
        self.block = TransformerBlock(32)
        self.unpool = torch.nn.MaxUnpool2d(2)
        self.ceil_pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
        self.head = torch.nn.Conv2d(32, 4, 1)

    def forward(self, x):  # (1, 3, 16, 16)
        y, indices = self.pool(torch.relu(self.stem(x)))
        n, c, h, w = y.shape
        tokens = y.view(n, c, h * w).transpose(1, 2)
        y = self.block(tokens).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.head(self.ceil_pool(self.unpool(y, indices)))


SMOKE_MODELS = {
    "cnn_pool_indices": (CNNPoolIndices, lambda: torch.randn(1, 3, 16, 16)),
    "transformer_views": (TransformerBlock, lambda: torch.randn(2, 8, 32)),
    "mixed": (Mixed, lambda: torch.randn(1, 3, 16, 16)),
}


def smoke_model(name):
    cls, make_input = SMOKE_MODELS[name]
    torch.manual_seed(0)
    model = cls().eval()
    return model, make_input()
