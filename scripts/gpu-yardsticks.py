"""gpu-yardsticks.py — cuBLAS and FlashAttention (through the GPU machine's
PyTorch) at the shapes fomnet's GPU benchmarks use, measured in the same
lease so that fomnet's figures can be read as fractions of theirs.

Prints one JSON object per line:
  {"kind": "gemm", "op": "NT", "m": .., "n": .., "k": .., "ms": .., "tflops": ..}
  {"kind": "attention", "b": .., "t": .., "nh": .., "hd": .., "fwd_ms": .., "bwd_ms": .., ...}
GEMM: bf16 in, bf16 out (torch.matmul), NT = a @ b.T, NN = a @ b, TN = a.T @ b.
Attention: causal scaled_dot_product_attention on the flash backend; FLOPs
counted as fomnet counts them (forward 4·HD, backward 10·HD per unmasked
query-key pair); backward time = (forward + backward) − forward.
"""
import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(f, reps=20):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def gemms():
    shapes = [(16384, 768, 3072), (16384, 3072, 768), (16384, 768, 768), (16384, 50304, 768), (4096, 4096, 4096), (8192, 8192, 8192)]
    for m, n, k in shapes:
        for op in ("NT", "NN", "TN"):
            a = torch.randn((k, m) if op[0] == "T" else (m, k), device="cuda", dtype=torch.bfloat16)
            b = torch.randn((n, k) if op[1] == "T" else (k, n), device="cuda", dtype=torch.bfloat16)
            aa = a.T if op[0] == "T" else a
            bb = b.T if op[1] == "T" else b
            ms = timed(lambda: aa @ bb)
            print(json.dumps({"kind": "gemm", "op": op, "m": m, "n": n, "k": k, "ms": ms, "tflops": 2 * m * n * k / ms / 1e9}), flush=True)
            del a, b, aa, bb


def attention():
    for b, t, nh, hd in ((16, 1024, 12, 64), (8, 1024, 16, 128), (4, 4096, 12, 64), (2, 4096, 16, 128)):
        q, k, v = (torch.randn(b, nh, t, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        do = torch.randn(b, nh, t, hd, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            fwd = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))

            def both():
                o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                o.backward(do)

            total = timed(both)
        pairs = b * nh * t * (t + 1) / 2
        bwd = total - fwd
        print(json.dumps({"kind": "attention", "b": b, "t": t, "nh": nh, "hd": hd, "fwd_ms": fwd, "bwd_ms": bwd,
                          "fwd_tflops": 4 * hd * pairs / fwd / 1e9, "bwd_tflops": 10 * hd * pairs / bwd / 1e9}), flush=True)


if __name__ == "__main__":
    print(json.dumps({"kind": "device", "name": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
    gemms()
    attention()
    sys.exit(0)
