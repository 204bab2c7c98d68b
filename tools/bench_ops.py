"""PyTorch side of `cargo bench --bench ops`: the same ops and shapes, fp32 CPU, JSON on stdout."""
import json
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(torch.get_num_threads())


def time_ms(f):
    f()
    start = time.perf_counter()
    for _ in range(5):
        f()
    return (time.perf_counter() - start) * 200.0


with torch.no_grad():
    x = torch.randn(2, 320, 32, 32)
    w3 = torch.randn(320, 320, 3, 3) * 0.02
    w1 = torch.randn(320, 320, 1, 1) * 0.02
    x8 = torch.randn(2, 1280, 8, 8)
    w8 = torch.randn(1280, 1280, 3, 3) * 0.02
    q = torch.randn(2, 8, 1024, 40)
    tokens = torch.randn(2, 1024, 320)
    lw = torch.randn(2560, 320) * 0.02
    gn = torch.nn.GroupNorm(32, 320)
    print(json.dumps({
        "conv3x3_320_32x32": time_ms(lambda: F.conv2d(x, w3, padding=1)),
        "conv1x1_320_32x32": time_ms(lambda: F.conv2d(x, w1)),
        "conv3x3_1280_8x8": time_ms(lambda: F.conv2d(x8, w8, padding=1)),
        "attention_8x1024x40": time_ms(lambda: F.scaled_dot_product_attention(q, q, q)),
        "groupnorm_320_32x32": time_ms(lambda: gn(x)),
        "linear_2048x320x2560": time_ms(lambda: F.linear(tokens, lw)),
    }))
