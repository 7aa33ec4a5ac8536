#!/usr/bin/env python3
"""Plots a training run's metrics.jsonl (train loss per step, validation loss per evaluation) as an
SVG, with no dependencies beyond Python 3:

    python3 tools/plot_metrics.py runs/main/model/metrics.jsonl runs/main/loss.svg
"""
import json
import math
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    train, val = [], []
    with open(src) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "loss" in row:
                train.append((row["step"], row["loss"]))
            if "val_loss" in row:
                val.append((row["step"], row["val_loss"]))
    if not train:
        sys.exit(f"{src}: no training losses")
    W, H, L, R, T, B = 720, 420, 60, 20, 30, 45
    xs = [s for s, _ in train + val]
    ys = [v for _, v in train + val]
    x0, x1 = 0, max(xs)
    y0, y1 = math.floor(min(ys)) - 0.5, math.ceil(max(ys)) + 0.5
    px = lambda x: L + (x - x0) / max(x1 - x0, 1) * (W - L - R)
    py = lambda y: T + (y1 - y) / (y1 - y0) * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for k in range(int(y0), int(y1) + 1):
        y = py(k)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{k}</text>')
    for k in range(0, x1 + 1, max(1, (x1 // 6) // 50 * 50 or 50)):
        x = px(k)
        out.append(f'<text x="{x:.1f}" y="{H - B + 18}" text-anchor="middle">{k}</text>')
    out.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>')
    out.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">optimizer step</text>')
    out.append(f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" '
               'text-anchor="middle">loss (nats/token)</text>')
    pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in train)
    out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{pts}"/>')
    if val:
        pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in val)
        out.append(f'<polyline fill="none" stroke="#d62728" stroke-width="2" points="{pts}"/>')
        for s, v in val:
            out.append(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="3" fill="#d62728"/>')
    ln = math.log(50277)
    if y0 <= ln <= y1:
        out.append(f'<line x1="{L}" y1="{py(ln):.1f}" x2="{W - R}" y2="{py(ln):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{W - R - 4}" y="{py(ln) - 4:.1f}" text-anchor="end" fill="#666">ln 50277 (uniform)</text>')
    out.append(f'<text x="{L + 10}" y="{T + 14}" fill="#1f77b4">train loss</text>')
    out.append(f'<text x="{L + 10}" y="{T + 30}" fill="#d62728">validation loss</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
