"""A stop asked during a network forward is taken inside it (a 1024 forward takes seconds on a CPU: Ctrl-C on a
video, ComfyUI's Cancel), the hooks that check it are gone afterwards, and a stop never asked changes nothing."""
from __future__ import annotations

import pytest
import torch

from ben_core.callbacks import Cancelled, current_stop, stop_scope
from ben_core.model.ben2 import BENBase
from ben_core.pipeline import CutoutOptions, CutoutPipeline
from ben_core.predictor import BENPredictor


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return BENPredictor(BENBase().eval(), device="cpu", working_size=512)


def hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.modules())


class StopAfter:
    """``should_stop()`` that turns true at its ``n``-th call (counting every call)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def test_a_stop_during_the_forward_is_taken_inside_it(predictor):
    image = torch.rand(1, 600, 400, 3)
    stop = StopAfter(3)  # 1: before the chunk; 2, 3: the first blocks of the network
    with pytest.raises(Cancelled, match="forward"):
        predictor.predict_alpha(image, should_stop=stop)
    assert stop.calls == 3
    assert hooks(predictor.model) == 0

    stop = StopAfter(4)
    with pytest.raises(Cancelled):
        CutoutPipeline(predictor, CutoutOptions(foreground=False)).run(image, should_stop=stop)
    assert stop.calls == 4 and hooks(predictor.model) == 0


class Tiny(torch.nn.Module):
    """A network of the predictor's protocol (``[B, 3, S, S]`` -> logits ``[B, 1, S, S]``) with blocks in a list."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = torch.nn.ModuleList(torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))
        self.head = torch.nn.Conv2d(4, 1, 1)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(x)


def test_a_stop_never_asked_changes_nothing():
    torch.manual_seed(0)
    predictor = BENPredictor(Tiny().eval(), device="cpu", working_size=64)
    image = torch.rand(2, 90, 70, 3)
    plain = predictor.predict_alpha(image)
    never = StopAfter(10**9)
    watched = predictor.predict_alpha(image, should_stop=never)
    assert never.calls == 2 * (1 + 5)  # per image (one a chunk): before it, then stem, 3 blocks, head
    assert torch.equal(plain, watched) and hooks(predictor.model) == 0


def test_the_scope_is_restored_after_an_error():
    def stop():
        return False

    with pytest.raises(KeyError):
        with stop_scope(stop):
            assert current_stop() is stop
            raise KeyError
    assert current_stop() is None
