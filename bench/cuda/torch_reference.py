#!/usr/bin/env python3
"""The shapes of bench_ops_cuda through PyTorch on the same GPU: SDPA forced to cuDNN, bf16
torch.matmul (also at decode sizes, M = 1 and 8), F.cross_entropy, fused AdamW. Medians of CUDA-event timings; JSON out.

    python3 bench/cuda/torch_reference.py --json torch.json [--filter S] [--iters 20]
"""
import argparse
import json
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

RESULTS = []
ARGS = None


def selected(name):
    return not ARGS.filter or ARGS.filter in name


def time_ms(fn, iters=None):
    iters = iters or ARGS.iters
    for _ in range(ARGS.warmup):
        fn()
    torch.cuda.synchronize()
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for a, b in evs:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in evs)


def record(name, group, ms, flops=0.0, nbytes=0.0, note=""):
    r = {"name": name, "group": group, "ms": ms,
         "tflops": flops / (ms * 1e-3) / 1e12 if flops else 0.0,
         "gbps": nbytes / (ms * 1e-3) / 1e9 if nbytes else 0.0, "note": note}
    print(f"{name:<34} {ms:>10.4f} ms {r['tflops']:>9.1f} TFLOP/s {r['gbps']:>9.1f} GB/s  {note}", flush=True)
    RESULTS.append(r)


def rnd(*shape, dtype=torch.bfloat16):
    return (torch.rand(*shape, device="cuda", dtype=torch.float32) * 4 - 2).to(dtype)


def bench_attention():
    B, Hq, Hkv, E = 1, 32, 8, 128
    for L in (4096, 16384, 65536):
        sfx = f"_L{L}"
        if not (selected("attn_fwd" + sfx) or selected("attn_fwdbwd" + sfx)):
            continue
        q = rnd(B, Hq, L, E).requires_grad_()
        k = rnd(B, Hkv, L, E).requires_grad_()
        v = rnd(B, Hkv, L, E).requires_grad_()
        dout = rnd(B, Hq, L, E)
        fwd_flops = 2.0 * B * Hq * L * L * E
        iters = max(5, ARGS.iters // 4) if L >= 65536 else ARGS.iters

        # GQA through enable_gqa when the cuDNN backend takes it, else KV heads repeated (same FLOPs).
        def run(gqa):
            if gqa:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            kk = k.repeat_interleave(Hq // Hkv, dim=1)
            vv = v.repeat_interleave(Hq // Hkv, dim=1)
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=True)

        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            gqa = True
            try:
                run(True)
            except Exception as e:  # noqa: BLE001
                print(f"enable_gqa with cuDNN SDPA failed ({str(e).splitlines()[0]}); repeating KV heads")
                gqa = False
            note = "cuDNN SDPA, " + ("enable_gqa" if gqa else "KV repeated (repeat cost in fwd+bwd)")
            if selected("attn_fwd" + sfx):
                with torch.no_grad():
                    if gqa:
                        ms = time_ms(lambda: run(True), iters)
                    else:  # time the kernel alone: expand outside the timed region
                        kk = k.detach().repeat_interleave(Hq // Hkv, dim=1)
                        vv = v.detach().repeat_interleave(Hq // Hkv, dim=1)
                        ms = time_ms(lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True), iters)
                record("attn_fwd" + sfx, "attention", ms, fwd_flops, 0, note)
            if selected("attn_fwdbwd" + sfx):
                def fb():
                    o = run(gqa)
                    o.backward(dout)
                ms = time_ms(fb, iters)
                record("attn_fwdbwd" + sfx, "attention", ms, 3.5 * fwd_flops, 0, note)
        del q, k, v, dout
        torch.cuda.empty_cache()


def bench_decode():
    B, Hq, Hkv, E = 1, 32, 8, 128
    for S in (2048, 32768, 131072):
        name = f"decode_S{S}"
        if not selected(name):
            continue
        q = rnd(B, Hq, 1, E)
        k = rnd(B, Hkv, S, E)
        v = rnd(B, Hkv, S, E)
        with torch.no_grad():
            try:
                ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
                note = "SDPA default backend, enable_gqa"
            except Exception:  # noqa: BLE001
                kk, vv = k.repeat_interleave(Hq // Hkv, 1), v.repeat_interleave(Hq // Hkv, 1)
                ms = time_ms(lambda: F.scaled_dot_product_attention(q, kk, vv))
                note = "SDPA default backend, KV repeated"
        record(name, "decode", ms, 4.0 * B * Hq * S * E, 2.0 * B * S * Hkv * E * 2, note)


PROJS = [("8b", "in_proj", 4096, 18560), ("8b", "out_proj", 8192, 4096), ("8b", "q_proj", 4096, 4096),
         ("8b", "kv_proj", 4096, 1024), ("8b", "o_proj", 4096, 4096), ("8b", "mlp_up", 4096, 16384),
         ("8b", "mlp_down", 16384, 4096), ("1p4b", "in_proj", 2048, 10304), ("1p4b", "out_proj", 4096, 2048),
         ("1p4b", "q_proj", 2048, 2048), ("1p4b", "kv_proj", 2048, 1024), ("1p4b", "o_proj", 2048, 2048),
         ("1p4b", "mlp_up", 2048, 4096), ("1p4b", "mlp_down", 4096, 2048), ("1p4b", "lm_head", 2048, 50304)]


def bench_gemms():
    M = 8192
    for model, pname, K, N in PROJS:
        base = f"gemm_{model}_{pname}"
        if not selected(base):
            continue
        x, w, dy = rnd(M, K), rnd(N, K), rnd(M, N)
        dw = torch.zeros(N, K, device="cuda", dtype=torch.float32)
        flops = 2.0 * M * N * K
        shape = f"M={M} N={N} K={K}"
        if selected(base + "_fwd"):
            record(base + "_fwd", "gemm", time_ms(lambda: torch.matmul(x, w.t())), flops, 0, shape)
        if selected(base + "_dgrad"):
            record(base + "_dgrad", "gemm", time_ms(lambda: torch.matmul(dy, w)), flops, 0, shape)
        if selected(base + "_wgrad"):
            # fp32 accumulation into dW (beta = 1), as ours; bf16 output where this torch lacks out_dtype.
            if _addmm_out_dtype(dw, dy, x):
                fn, note = (lambda: torch.addmm(dw, dy.t(), x, out_dtype=torch.float32)), " addmm fp32 out"
            else:
                fn, note = (lambda: torch.matmul(dy.t(), x)), " bf16 out (no out_dtype)"
            record(base + "_wgrad", "gemm", time_ms(fn), flops, 0, shape + note)
        del x, w, dy, dw


GEMV_PROJS = [("8b", "in_proj", 4096, 18560), ("8b", "out_proj", 8192, 4096), ("8b", "q_proj", 4096, 4096),
              ("8b", "kv_proj", 4096, 1024), ("8b", "mlp_up", 4096, 16384), ("8b", "mlp_down", 16384, 4096),
              ("8b", "lm_head", 4096, 50304)]


def bench_gemv():
    # Decode-sized products, weights rotated over >= 256 MB of copies (no L2 reuse), as ours.
    for model, pname, K, N in GEMV_PROJS:
        for M in (1, 8):
            name = f"gemv_{model}_{pname}_m{M}"
            if not selected(name):
                continue
            wbytes = 2.0 * N * K
            copies = max(1, int(-(-256e6 // wbytes)))
            ws = [rnd(N, K) for _ in range(copies)]
            x = rnd(M, K)
            it = [0]

            def fn():
                w = ws[it[0] % copies]
                it[0] += 1
                return torch.matmul(x, w.t())
            record(name, "gemv", time_ms(fn, max(ARGS.iters, 50)), 2.0 * M * N * K, wbytes,
                   f"torch.matmul M={M} N={N} K={K}")
            del ws, x


def _addmm_out_dtype(dw, dy, x):
    try:
        torch.addmm(dw, dy.t(), x, out_dtype=torch.float32)
        return True
    except Exception:  # noqa: BLE001
        return False


def bench_ce():
    if not selected("ce_"):
        return
    M, V = 8192, 50304
    logits = rnd(M, V)
    targets = torch.randint(0, V, (M,), device="cuda")
    nbytes = M * V * 2.0
    if selected("ce_fwd"):
        with torch.no_grad():
            record("ce_fwd", "loss", time_ms(lambda: F.cross_entropy(logits, targets)), 0, nbytes,
                   "F.cross_entropy bf16 logits, mean")
    if selected("ce_fwdbwd"):
        lg = logits.clone().requires_grad_()

        def fb():
            lg.grad = None
            F.cross_entropy(lg, targets).backward()
        record("ce_fwdbwd", "loss", time_ms(fb), 0, 3 * nbytes, "F.cross_entropy fwd+bwd (grad allocated)")


def bench_adamw():
    if not selected("adamw"):
        return
    n = 1_430_000_000
    p = torch.nn.Parameter(rnd(n, dtype=torch.float32))
    p.grad = rnd(n, dtype=torch.float32)
    opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    record("adamw_1p43b", "optimizer", time_ms(opt.step), 0, n * 28.0, "torch fused AdamW, one flat tensor, no bf16 copy")
    del opt, p
    torch.cuda.empty_cache()


def bench_rmsnorm():
    for D in (2048, 4096):
        name = f"rmsnorm_D{D}"
        if not selected(name):
            continue
        M = 8192
        x = rnd(M, D)
        w = torch.ones(D, device="cuda", dtype=torch.bfloat16)
        if hasattr(F, "rms_norm"):
            with torch.no_grad():
                record(name + "_fwd", "norm", time_ms(lambda: F.rms_norm(x, (D,), w, 1e-5)), 0, 2.0 * M * D * 2,
                       "F.rms_norm")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--filter", default="")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ARGS = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}, iters {ARGS.iters} (median)")
    for fn in (bench_gemms, bench_gemv, bench_attention, bench_decode, bench_ce, bench_rmsnorm, bench_adamw):
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            print(f"{fn.__name__} failed: {e}")
        torch.cuda.empty_cache()
    if ARGS.json:
        out = {"device": torch.cuda.get_device_name(), "source": "torch " + torch.__version__,
               "cudnn": torch.backends.cudnn.version(), "results": RESULTS}
        tmp = ARGS.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
        os.replace(tmp, ARGS.json)
        print(f"wrote {ARGS.json}")


if __name__ == "__main__":
    main()
