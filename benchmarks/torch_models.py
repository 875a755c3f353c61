"""The benchmarks' PyTorch peers, built from the library's modules
(alexnet_jax/interop/torch_models.py).

`build(variant)` is the network compare_torch.py and accelerator.py time: the library's PyTorch
AlexNet of the variant with stock nn.LocalResponseNorm (alpha 1e-4, PyTorch's alpha / n), and for
`paper` one LRN across all 96 / 256 channels instead of one per tower: the same cost without the
split and concatenation. `TorchBench` is its training (and inference) step. `torchvision_alexnet`
is torchvision.models.alexnet without torchvision (tests use it).
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports, which need the scripts' sys.path
    import sys

    print(
        "error: benchmarks/torch_models.py is a helper module of compare_torch.py and "
        "accelerator.py, not a benchmark: run python benchmarks/compare_torch.py --help (or "
        "accelerator.py).",
        file=sys.stderr,
    )
    sys.exit(2)

import torch
from torch import nn

from alexnet_jax.interop.convert import VARIANTS
from alexnet_jax.interop.torch_models import torch_alexnet, torch_lrn_alpha
from alexnet_jax.model import lrn

# features.2 and features.6 in the LRN stacks (alexnet_jax/interop/convert.py)
_LRN_INDICES = (2, 6)


def torchvision_alexnet(num_classes: int) -> nn.Module:
    """torchvision.models.alexnet (the "one weird trick" variant), 224x224 input."""
    return torch_alexnet("torchvision", num_classes)


def build(variant: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """The PyTorch model of a variant (PyTorch's default initialization; timing only)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    torch.manual_seed(seed)
    model = torch_alexnet(variant, num_classes, lrn_convention="cuda_convnet")
    if variant == "paper":
        alpha = torch_lrn_alpha("cuda_convnet")
        for index in _LRN_INDICES:
            model.features[index] = nn.LocalResponseNorm(lrn.SIZE, alpha, lrn.BETA, lrn.K)
    return model


def narrow_classifier(model: nn.Module, width: int) -> nn.Module:
    """`model` with fc6 and fc7 at `width` units (quick runs: the tests' narrowed JAX model,
    tests/multihost_worker.py, does the same); fc8 keeps its classes."""
    fc6, fc8 = model.classifier[1], model.classifier[6]
    model.classifier[1] = nn.Linear(fc6.in_features, width)
    model.classifier[4] = nn.Linear(width, width)
    model.classifier[6] = nn.Linear(width, fc8.out_features)
    return model


class TorchBench:
    """One PyTorch form of a model (eager or torch.compile'd, NCHW or channels_last) training
    with torch.optim.SGD (lr 0.01, momentum 0.9, weight decay 5e-4) on cross-entropy, dropout on,
    on fixed inputs already on `device`; `bf16` autocasts to bfloat16 as the JAX step computes.

    images: NHWC float32 numpy (the JAX batch's layout); labels: integer numpy.
    compile_backend: torch.compile's backend ("inductor"; "eager" only traces, for quick checks).
    """

    def __init__(
        self,
        model: nn.Module,
        images,
        labels,
        *,
        device: str,
        channels_last: bool = False,
        compiled: bool = False,
        bf16: bool = False,
        compile_backend: str = "inductor",
    ):
        self.device = device
        self.model = model.to(device).train()
        self.x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)  # NCHW
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(labels.astype("int64")).to(device)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
        )
        self.autocast = bf16
        self._train, self._eval = self._train_step, self._eval_step
        if compiled:  # static shapes: one graph per bench, not a dynamic one across benches
            compile_ = lambda fn: torch.compile(fn, backend=compile_backend, dynamic=False)
            self._train, self._eval = compile_(self._train_step), compile_(self._eval_step)

    def _train_step(self):
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def _eval_step(self):
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(self.x)

    def run_train(self) -> None:
        self.model.train()
        self._train().item()  # .item() waits for the device

    def run_eval(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self._eval().sum().item()
