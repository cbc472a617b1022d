#!/usr/bin/env python3
"""Export a Hugging Face causal LM to destein's checkpoint format.

    python3 tools/export_checkpoint.py gpt2-large --out exported/gpt2-large
    python3 tools/export_checkpoint.py /path/to/llama-2-7b --out exported/llama2-7b --dtype float16
    python3 tools/export_checkpoint.py /path/to/mpt-7b --out exported/mpt-7b --dtype bfloat16
    python3 tools/export_checkpoint.py meta-llama/Llama-3.1-8B --out exported/llama3.1-8b --dtype bfloat16
    python3 tools/export_checkpoint.py Qwen/Qwen2.5-7B --out exported/qwen2.5-7b --dtype bfloat16
    python3 tools/export_checkpoint.py google/gemma-2-9b --out exported/gemma-2-9b --dtype bfloat16

Llama 3.x, Mistral, Qwen2/2.5, Qwen3, Gemma 2 and the Gemma 3 text model (gemma3_text,
e.g. google/gemma-3-1b-pt) export like the others. The reference logits are computed with
transformers' eager attention: its SDPA and flash paths skip Gemma 2's attention
soft-capping in some versions, and the reference must be the architecture as published.

MPT loads through transformers' own MptForCausalLM (transformers >= 4.31); pass
--trust-remote-code to run MosaicML's modeling code shipped with the checkpoint instead
(needed for MPT options transformers' port lacks, e.g. attn_config.qk_ln). Both name the
parameters the same way (transformer.blocks.N.attn.Wqkv.weight, ...).

The output folder holds `model.pt`, a TorchScript archive whose named parameters carry the
Hugging Face names (`transformer.h.0.attn.c_attn.weight`, ...) with the extra files
`config.json` (the model's Hugging Face config) and `reference.json` (a few token id
inputs and the source model's last-position logits, so that `destein verify --model DIR`
checks destein's native forward pass against transformers), plus the tokenizer files.

Needs torch; the command-line export also needs transformers. `export_state_dict` is the
core and needs torch only (that is what destein's tests exercise).
"""
import argparse
import json
import os
import sys

import torch


class _Node(torch.nn.Module):
    """A module with no behaviour: only here to nest parameters by their dotted names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _nest(state_dict):
    root = _Node()
    for name, tensor in state_dict.items():
        parts = name.split(".")
        node = root
        for part in parts[:-1]:
            if not hasattr(node, part):
                node.add_module(part, _Node())
            node = getattr(node, part)
        node.register_parameter(parts[-1], torch.nn.Parameter(tensor.detach().contiguous(), requires_grad=False))
    return root


def export_state_dict(state_dict, config, out_path, reference_cases=None, source=""):
    """Writes `state_dict` (HF names -> tensors) as a TorchScript archive at `out_path`.

    config: the Hugging Face config as a dict (must hold model_type).
    reference_cases: list of (input_ids list, last-position logits list) or None.
    """
    if "model_type" not in config:
        raise ValueError("config has no model_type")
    # Tied weights appear under two names that share storage; keep both names but give
    # the archive independent tensors so that torch.jit.save does not alias them oddly.
    seen = {}
    clean = {}
    for name, t in state_dict.items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        clean[name] = t.clone() if key in seen else t
        seen[key] = name
    module = torch.jit.script(_nest(clean))
    extra = {"config.json": json.dumps(config, indent=2)}
    if reference_cases:
        extra["reference.json"] = json.dumps({
            "source": source,
            "cases": [{"input_ids": [int(i) for i in ids], "last_logits": [float(x) for x in logits]}
                      for ids, logits in reference_cases],
        })
    tmp = str(out_path) + ".tmp"
    torch.jit.save(module, tmp, _extra_files=extra)
    os.replace(tmp, out_path)


def _plain_config(config):
    """config.to_dict() with nested config objects (MptConfig.attn_config is an
    MptAttentionConfig in transformers) turned into plain dicts, so it serialises as the
    config.json the checkpoint ships."""
    def plain(v):
        if hasattr(v, "to_dict"):
            return plain(v.to_dict())
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, torch.dtype):
            return str(v).replace("torch.", "")
        return v
    return plain(config.to_dict())


def _reference_inputs(tokenizer, vocab_size):
    texts = ["The quick brown fox jumps over the lazy dog.",
             "I can't believe you would say something like that",
             "Hello"]
    cases = []
    for t in texts:
        ids = tokenizer(t)["input_ids"] if tokenizer is not None else []
        if not ids:
            ids = [i % vocab_size for i in range(1, 9)]
        cases.append(ids)
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Hugging Face model id or local folder")
    ap.add_argument("--out", required=True, help="output folder (model.pt + tokenizer), or a .pt file")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="storage dtype of the exported weights")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="run the modeling code shipped with the checkpoint (MosaicML's MPT)")
    args = ap.parse_args(argv)
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        sys.exit("export_checkpoint.py: transformers is not installed (pip install transformers)")

    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32,
                                                 trust_remote_code=args.trust_remote_code,
                                                 attn_implementation="eager")
    if model.config.model_type == "gemma3":
        sys.exit("export_checkpoint.py: model_type gemma3 is Gemma 3 with its vision tower; destein runs "
                 "the text model (gemma3_text, e.g. google/gemma-3-1b-pt)")
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    except Exception:  # a model folder without tokenizer files
        tokenizer = None
    cases = []
    with torch.no_grad():
        for ids in _reference_inputs(tokenizer, model.config.vocab_size):
            logits = model(torch.tensor([ids])).logits[0, -1]
            cases.append((ids, logits.tolist()))
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    out = args.out
    if out.endswith(".pt"):
        archive = out
    else:
        os.makedirs(out, exist_ok=True)
        archive = os.path.join(out, "model.pt")
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    export_state_dict(state, _plain_config(model.config), archive, cases,
                      source=f"transformers {transformers.__version__} {args.model} (float32 logits)")
    print(f"wrote {archive}")


if __name__ == "__main__":
    main()
