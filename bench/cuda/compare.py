#!/usr/bin/env python3
"""One table from bench_ops_cuda's and torch_reference.py's JSON: ours, torch, ratio, target,
pass/fail. ratio = torch time / our time (> 1: we are faster). Variant rows of ours (suffix _fast,
_own, _cublaslt) are compared with torch's row of the same base name.

    python3 bench/cuda/compare.py ours.json torch.json
"""
import json
import sys

# Targets as the minimum ratio torch_ms / ours_ms, per group or name prefix.
TARGETS = [
    ("attn_", 0.95, "within 5% of torch SDPA (cuDNN)"),
    ("gemm_", 0.95, ">= 95% of torch.matmul"),
    ("gemv_", 1.00, ">= torch.matmul at decode sizes (and >= 85% of 4.2 TB/s on W at M = 1)"),
    ("ce_", 1.00, ">= torch F.cross_entropy"),
    ("adamw", 1.00, ">= torch fused AdamW (ours also writes bf16)"),
    ("rmsnorm", 1.00, ">= torch F.rms_norm"),
    ("decode_", 1.00, ">= torch SDPA decode"),
]
# Absolute references (gpu.md, same machine): decode attention at batch 1, µs.
DECODE_REF_US = {"decode_S2048": 14.0, "decode_S32768": 50.0, "decode_S131072": 137.0}


def load(path):
    with open(path) as f:
        data = json.load(f)
    return data, {r["name"]: r for r in data.get("results", [])}


def target_for(name):
    for prefix, ratio, text in TARGETS:
        if name.startswith(prefix):
            return ratio, text
    return None, ""


def base_name(name):
    for sfx in ("_fast", "_own", "_cublaslt"):
        if name.endswith(sfx):
            return name[: -len(sfx)]
    return name


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    ours_data, ours = load(sys.argv[1])
    torch_data, theirs = load(sys.argv[2])
    print(f"ours:  {ours_data.get('source')} on {ours_data.get('device')}")
    print(f"torch: {torch_data.get('source')} (cuDNN {torch_data.get('cudnn')}) on {torch_data.get('device')}")
    hdr = f"{'op':<30} {'ours ms':>10} {'torch ms':>10} {'ratio':>7} {'ours TF/s':>10} {'ours GB/s':>10} {'target':>7}  result"
    print(hdr)
    print("-" * len(hdr))
    fails = 0
    for name, r in ours.items():
        ref = theirs.get(base_name(name))
        tgt, _ = target_for(name)
        t_ms = ref["ms"] if ref else None
        ratio = t_ms / r["ms"] if t_ms and r["ms"] > 0 else None
        if name in DECODE_REF_US and ratio is None:
            ratio = DECODE_REF_US[name] / (r["ms"] * 1e3)
            t_ms = DECODE_REF_US[name] / 1e3
        is_variant = base_name(name) != name
        if ratio is None or tgt is None:
            verdict = "-"
        elif is_variant:
            verdict = "(variant)"
        else:
            ok = ratio >= tgt
            verdict = "pass" if ok else "FAIL"
            fails += 0 if ok else 1
        print(f"{name:<30} {r['ms']:>10.4f} {t_ms if t_ms else float('nan'):>10.4f} "
              f"{ratio if ratio else float('nan'):>7.3f} {r['tflops']:>10.1f} {r['gbps']:>10.1f} "
              f"{tgt if tgt else float('nan'):>7.2f}  {verdict}")
    for name in DECODE_REF_US:
        if name in ours:
            print(f"  {name}: reference {DECODE_REF_US[name]:.0f} µs (gpu.md), ours {ours[name]['ms'] * 1e3:.1f} µs")
    for name, r in ours.items():
        if name.startswith("gemv_") or name.startswith("decode_"):
            print(f"  {name}: {r['gbps']:.0f} GB/s = {r['gbps'] / 4200.0:.0%} of 4.2 TB/s")
    missing = [n for n in theirs if n not in ours]
    if missing:
        print("torch rows without ours:", ", ".join(missing))
    print(f"{fails} below target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
