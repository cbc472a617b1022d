#!/usr/bin/env python3
"""The PyTorch side of benchmarks/train_throughput: the same GPT-2 (shape, initialisation
scale, batch of random windows), trained the way a careful PyTorch user would, with
autograd, torch.optim.AdamW and clip_grad_norm_. Prints one JSON object.

    python3 train_throughput_eager.py --threads 2 --steps 20 --warmup 3
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def make_params(L, d, V, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.02: (torch.randn(*s, generator=g) * std).requires_grad_()
    z = lambda *s: torch.zeros(*s).requires_grad_()
    o = lambda *s: torch.ones(*s).requires_grad_()
    res = 0.02 / math.sqrt(2 * L)
    p = {"wte": r(V, d), "wpe": r(P, d), "lnf_w": o(d), "lnf_b": z(d), "layers": []}
    for _ in range(L):
        p["layers"].append({
            "ln1_w": o(d), "ln1_b": z(d), "ln2_w": o(d), "ln2_b": z(d),
            "attn_w": r(d, 3 * d), "attn_b": z(3 * d), "proj_w": r(d, d, std=res), "proj_b": z(d),
            "fc_w": r(d, 4 * d), "fc_b": z(4 * d), "out_w": r(4 * d, d, std=res), "out_b": z(d)})
    return p


def loss_of(p, window, H):
    ids, targets = window[:, :-1], window[:, 1:]
    B, T = ids.shape
    d = p["wte"].shape[1]
    Dh = d // H
    x = p["wte"][ids] + p["wpe"][:T]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for l in p["layers"]:
        h = F.layer_norm(x, (d,), l["ln1_w"], l["ln1_b"])
        qkv = torch.addmm(l["attn_b"], h.reshape(-1, d), l["attn_w"]).view(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(Dh)).masked_fill(future, float("-inf")), -1)
        z = (att @ v).transpose(1, 2).reshape(B * T, d)
        x = x + torch.addmm(l["proj_b"], z, l["proj_w"]).view(B, T, d)
        h = F.layer_norm(x, (d,), l["ln2_w"], l["ln2_b"])
        h = F.gelu(torch.addmm(l["fc_b"], h.reshape(-1, d), l["fc_w"]), approximate="tanh")
        x = x + torch.addmm(l["out_b"], h, l["out_w"]).view(B, T, d)
    x = F.layer_norm(x, (d,), p["lnf_w"], p["lnf_b"])
    logits = x @ p["wte"].T
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p = make_params(a.layers, a.d_model, a.vocab, a.context)
    flat = [p["wte"], p["wpe"], p["lnf_w"], p["lnf_b"]] + [t for l in p["layers"] for t in l.values()]
    decay = [t for t in flat if t.dim() >= 2]
    no_decay = [t for t in flat if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    def step():
        window = torch.randint(0, a.vocab, (a.batch, a.context + 1), generator=g)
        loss = loss_of(p, window, a.heads)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flat, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    seconds = time.perf_counter() - t
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "steps": a.steps,
                      "tokens_per_s": a.steps * a.batch * a.context / seconds}))


if __name__ == "__main__":
    main()
