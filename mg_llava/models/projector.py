"""2-layer MLP projectors. Parameter names (`model.0.*`, `model.2.*`) match xtuner's ProjectorModel,
which the released MG-LLaVA checkpoints were saved from."""
import torch.nn as nn


class MLPProjector(nn.Module):
    """(..., in_dim) -> (..., out_dim): Linear -> GELU -> Linear (depth 2), or deeper/shallower."""

    def __init__(self, in_dim, out_dim, depth=2):
        super().__init__()
        layers = [nn.Linear(in_dim, out_dim)]
        for _ in range(1, depth):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)
