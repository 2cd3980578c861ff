"""The two architectures a pipeline can pick with the `model` hyperparameter.

`mlp`: flatten, one hidden layer of `hidden_units` with ReLU and dropout.
`cnn`: two 3x3 convolutions (16 and 32 channels) and a 2x2 max-pool, then the same
hidden layer. Both take float32 images (N, C, H, W) in [0, 1] and return logits
(N, num_classes). Plain `nn.Sequential`s, so TorchScript and a TorchServe handler
can rebuild or load them without this package.
"""

from __future__ import annotations

from torch import nn


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden_units: int,
    dropout: float,
) -> nn.Sequential:
    channels, height, width = input_shape
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, hidden_units),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, num_classes),
        )
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (height // 2) * (width // 2), hidden_units),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, num_classes),
        )
    raise ValueError(f"unknown model {name!r}; expected 'mlp' or 'cnn'")
