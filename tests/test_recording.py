"""record_attention: the context manager mechanics (layer-specific maps are tested with each layer)."""

import pytest
import torch
from torch import nn

from visattn import AttentionMapSource, record_attention


class Gate(AttentionMapSource, nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, 1, 1)
        self.extra_calls = 0

    def forward(self, x):
        mask = torch.sigmoid(self.proj(x))
        self._record("spatial", mask)
        if self.is_recording:
            self.extra_calls += 1
        return x * mask


def make_model():
    return nn.Sequential(nn.Conv2d(3, 4, 1), Gate(4), nn.Sequential(Gate(4)), Gate(4))


def test_records_every_layer_by_module_name():
    model = make_model()
    x = torch.randn(2, 3, 5, 7)
    with record_attention(model) as maps:
        model(x)
    assert set(maps) == {"1", "2.0", "3"}
    for store in maps.values():
        assert store["spatial"].shape == (2, 1, 5, 7)
        assert not store["spatial"].requires_grad


def test_layers_that_did_not_run_are_absent():
    model = make_model()
    with record_attention(model) as maps:
        model[:2](torch.randn(1, 3, 4, 4))
    assert set(maps) == {"1"}


def test_no_state_and_no_extra_work_outside_the_context():
    model = make_model()
    model(torch.randn(1, 3, 4, 4))
    assert all(m.extra_calls == 0 for m in model.modules() if isinstance(m, Gate))
    with record_attention(model):
        model(torch.randn(1, 3, 4, 4))
    assert all("_attention_store" not in m.__dict__ for m in model.modules())
    model(torch.randn(1, 3, 4, 4))
    assert all(m.extra_calls == 1 for m in model.modules() if isinstance(m, Gate))


def test_last_call_wins_and_detach_false_keeps_graph():
    gate = Gate(2)
    with record_attention(gate, detach=False) as maps:
        gate(torch.zeros(1, 2, 3, 3))
        y = gate(torch.ones(1, 2, 3, 3))
    assert set(maps) == {""}
    torch.testing.assert_close(maps[""]["spatial"], y[:, :1] / torch.ones(1, 1, 3, 3))
    maps[""]["spatial"].sum().backward()
    assert gate.proj.weight.grad is not None


def test_nested_contexts_restore_outer_store():
    model = make_model()
    with record_attention(model) as outer:
        with record_attention(model[1]) as inner:
            model(torch.randn(1, 3, 4, 4))
        model(torch.randn(1, 3, 2, 2))
    assert inner[""]["spatial"].shape[-1] == 4
    assert outer["1"]["spatial"].shape[-1] == 2


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"), record_attention(lambda x: x):
        pass
