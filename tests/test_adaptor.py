"""The text adaptor: its mixture of whitening experts, summed expert by expert."""

import torch

from rec_transfer.models.components import MoEAdaptor


def test_mixture_equals_the_gate_weighted_stack_of_experts_with_its_gradients():
    torch.manual_seed(0)
    adaptor = MoEAdaptor(16, 8, experts=4, dropout=0.0)
    torch.nn.init.normal_(adaptor.gate.weight)  # gates that differ between items and experts
    x = torch.randn(5, 7, 16, requires_grad=True)  # any leading shape

    def stacked(module, inputs):  # the textbook form, which holds (..., E, D) at once
        gates = torch.softmax(module.gate(inputs), dim=-1)
        return (gates.unsqueeze(-1) * torch.stack([e(inputs) for e in module.experts], dim=-2)).sum(dim=-2)

    out = adaptor(x)
    assert out.shape == (5, 7, 8)
    torch.testing.assert_close(out, stacked(adaptor, x))
    grads = torch.autograd.grad(out.square().sum(), [x, *adaptor.parameters()])
    expected = torch.autograd.grad(stacked(adaptor, x).square().sum(), [x, *adaptor.parameters()])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
