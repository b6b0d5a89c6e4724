"""The memory encoder's channels-last path (masklet.models.memory) computes what the plain NCHW layers compute."""
import pytest
import torch
import torch.nn.functional as F

from masklet.models.build import build_model
from masklet.models.common import LayerNorm2d


def per_channel_norm(ln: LayerNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The definition: normalise each pixel over its channels (biased variance), then scale and shift."""
    x = x.float()
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    return ln.weight[:, None, None] * (x - mean) / torch.sqrt(var + ln.eps) + ln.bias[:, None, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layernorm2d_channels_last_matches_the_definition(dtype):
    torch.manual_seed(0)
    ln = LayerNorm2d(16)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(3, 16, 9, 7) * 3 + 1).to(dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = ln(x_cl)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.float(), per_channel_norm(ln, x), atol=tol, rtol=tol)
    torch.testing.assert_close(y, ln(x.contiguous()), atol=tol, rtol=tol)  # the NCHW path


def test_layernorm2d_channels_last_gradients_match_the_nchw_path():
    torch.manual_seed(1)
    ln = LayerNorm2d(32)
    x = torch.randn(2, 32, 6, 6)
    grad = torch.randn(2, 32, 6, 6)
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xi = x.detach().contiguous(memory_format=memory_format).requires_grad_()
        ln.zero_grad()
        ln(xi).backward(grad)
        grads.append((xi.grad.clone(), ln.weight.grad.clone(), ln.bias.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def nchw_memory_encoder(encoder, pix_feat, mask_for_mem):
    """The official memory encoder's order of operations, every tensor in NCHW (LayerNorm2d's definition path)."""
    x = encoder.pix_feat_proj(pix_feat) + encoder.mask_downsampler.encoder(mask_for_mem)
    for block in encoder.fuser.layers:
        y = block.norm(block.dwconv(x)).permute(0, 2, 3, 1)
        x = x + (block.gamma * block.pwconv2(block.act(block.pwconv1(y)))).permute(0, 3, 1, 2)
    return encoder.out_proj(x)


def test_memory_encoder_matches_nchw_layers_with_gradients():
    torch.manual_seed(2)
    model = build_model("sam2_test_wide")
    encoder = model.memory_encoder
    for block in encoder.fuser.layers:  # layer scale starts at 1e-6: make the fuser's branch count
        block.gamma.data.fill_(0.5)
    pix_feat = torch.randn(8, 64, 8, 8)
    logits = (torch.randn(8, 1, 128, 128) * 4).requires_grad_()
    outputs, grads = [], []
    for run in ("channels_last", "nchw"):
        encoder.zero_grad()
        logits.grad = None
        mask_for_mem = torch.sigmoid(logits) * 20 - 10
        if run == "nchw":
            memory = nchw_memory_encoder(encoder, pix_feat, mask_for_mem)
        else:
            memory, pos = encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
            assert memory.is_contiguous() and pos.shape == memory.shape  # callers get NCHW
        (memory * torch.linspace(-1, 1, memory.numel()).view_as(memory)).sum().backward()
        outputs.append(memory.detach())
        grads.append([logits.grad.clone()] + [p.grad.clone() for p in encoder.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert F.l1_loss(outputs[0], torch.zeros_like(outputs[0])) > 0.1  # not a trivially small output
