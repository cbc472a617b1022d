#!/usr/bin/env python3
"""The eager-PyTorch side of benchmarks/decode_throughput: the same GPT-2-small-shaped
random model and workload as the C++ program, written the way a careful Python user
would (HF-style KV cache grown with torch.cat, last-position logits only, top-p sampling
as HF's TopPLogitsWarper does it). Prints one JSON object.

    python3 decode_throughput_eager.py --threads 2 --prompt-len 24 --new-tokens 20 --batches 1,25
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def make_model(L, d, V, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.02
    m = {"wte": r(V, d), "wpe": r(P, d), "lnf_w": torch.ones(d), "lnf_b": torch.zeros(d), "layers": []}
    for _ in range(L):
        m["layers"].append({
            "ln1_w": torch.ones(d), "ln1_b": torch.zeros(d), "ln2_w": torch.ones(d), "ln2_b": torch.zeros(d),
            "attn_w": r(d, 3 * d), "attn_b": torch.zeros(3 * d), "proj_w": r(d, d), "proj_b": torch.zeros(d),
            "fc_w": r(d, 4 * d), "fc_b": torch.zeros(4 * d), "out_w": r(4 * d, d), "out_b": torch.zeros(d)})
    return m


def forward(m, ids, pos, mask, cache, H):
    """ids, pos: (B, T); mask: (B, S) over cached + new; cache: list of (k, v) or None."""
    B, T = ids.shape
    d = m["wte"].shape[1]
    Dh = d // H
    x = m["wte"][ids] + m["wpe"][pos]
    S = mask.shape[1]
    causal = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    allowed = causal[None, None] & mask[:, None, None, :].bool()
    bias = torch.zeros(B, 1, T, S).masked_fill(~allowed, torch.finfo(torch.float32).min)
    new_cache = []
    for i, l in enumerate(m["layers"]):
        h = F.layer_norm(x, (d,), l["ln1_w"], l["ln1_b"])
        q, k, v = torch.addmm(l["attn_b"], h.view(-1, d), l["attn_w"]).view(B, T, 3 * d).split(d, dim=2)
        q = q.view(B, T, H, Dh).transpose(1, 2)
        k = k.view(B, T, H, Dh).transpose(1, 2)
        v = v.view(B, T, H, Dh).transpose(1, 2)
        if cache is not None:
            k = torch.cat([cache[i][0], k], dim=2)
            v = torch.cat([cache[i][1], v], dim=2)
        new_cache.append((k, v))
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(Dh) + bias
        z = torch.matmul(w.softmax(-1), v).transpose(1, 2).reshape(B, T, d)
        x = x + torch.addmm(l["proj_b"], z.view(-1, d), l["proj_w"]).view(B, T, d)
        h = F.layer_norm(x, (d,), l["ln2_w"], l["ln2_b"])
        h = F.gelu(torch.addmm(l["fc_b"], h.view(-1, d), l["fc_w"]), approximate="tanh")
        x = x + torch.addmm(l["out_b"], h, l["out_w"]).view(B, T, d)
    x = F.layer_norm(x[:, -1], (d,), m["lnf_w"], m["lnf_b"])
    return x @ m["wte"].T, new_cache


def top_p_sample(logits, top_p, gen):
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= (1 - top_p)
    remove[..., -1:] = False
    logits = logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen)


def run(m, B, prompt_len, new_tokens, H, V, top_p):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (B, prompt_len), generator=g)
    mask = torch.ones(B, prompt_len, dtype=torch.long)
    pos = torch.arange(prompt_len).expand(B, -1)
    with torch.no_grad():
        t0 = time.perf_counter()
        logits, cache = forward(m, ids, pos, mask, None, H)
        t1 = time.perf_counter()
        for step in range(new_tokens):
            nxt = top_p_sample(logits, top_p, g)
            if step + 1 == new_tokens:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long)], dim=1)
            pos = torch.full((B, 1), prompt_len + step)
            logits, cache = forward(m, nxt, pos, mask, cache, H)
        t2 = time.perf_counter()
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1,
            "prefill_tokens_per_s": B * prompt_len / (t1 - t0),
            "decode_tokens_per_s": B * new_tokens / (t2 - t1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--prompt-len", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--batches", default="1,25")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--top-p", type=float, default=0.9)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = make_model(a.layers, a.d_model, a.vocab, 1024)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": {}}
    for B in [int(b) for b in a.batches.split(",")]:
        run(m, B, a.prompt_len, 2, a.heads, a.vocab, a.top_p)  # warm-up
        runs = [run(m, B, a.prompt_len, a.new_tokens, a.heads, a.vocab, a.top_p) for _ in range(a.repeats)]
        out["results"][str(B)] = {
            "prefill_tokens_per_s": max(r["prefill_tokens_per_s"] for r in runs),
            "decode_tokens_per_s": max(r["decode_tokens_per_s"] for r in runs)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
