#!/usr/bin/env python3
"""Makes the HF reference data under tests/data/hf/: tiny random NemotronH and Mamba2 models built
with transformers (5.17 on the GPU machine), run on the CPU in float32 through the plain PyTorch
path (no mamba_ssm / causal_conv1d / hub kernels; use_mamba_kernels=False for NemotronH).

For each model <name> it writes <out>/<name>/:
  config.json, model.safetensors   save_pretrained, then keys renamed to the prefix in MODELS
                                   (backbone. as on the Hub, or model. as transformers 5 names it)
  reference.safetensors            input_ids I64 [T]; logits F32 [T,V]; loss F32 [1] (mean
                                   next-token cross-entropy, labels = input_ids); grad.<hub name>
                                   (backbone. prefix; a tied head's gradient is summed into the
                                   embeddings'); hidden.embeddings / hidden.layers.<i> /
                                   hidden.norm_f [T,D]; generate.logits [12,V]
  greedy.json                      prompt (first 20 ids), generated (generate(do_sample=False,
                                   max_new_tokens=12), cached decode), full_forward (greedy by
                                   re-running the whole sequence without cache)
  meta.json                        settings, versions, and what transformers did
It also loads every folder under --ours (checkpoints written by hybridlm's save_checkpoint) with
AutoModelForCausalLM.from_pretrained, checks that every weight arrived, and writes
<out>/<folder>/hf_logits.safetensors (input_ids, logits) and hf_check.json; and it reloads every
reference folder it wrote and re-checks the logits. report.json sums everything up.

Re-run (the GPU machine has torch 2.11 + transformers 5.17; only its CPU is used):
  1. in the main checkout: mkdir -p .gpu/hf/ours && cp tools/make_hf_reference.py .gpu/hf/ &&
     cp -r tests/data/hf/ours_* .gpu/hf/ours/   (.gpu/ is git-ignored)
  2. device run, carry [".gpu/hf"], command:
     cd .gpu/hf && PYTHONUNBUFFERED=1 python3 make_hf_reference.py --out $OUT/ref --ours ours 2>&1 |
       tee $OUT/run.log; cd $OUT && tar czf ref.tgz ref && rm -rf ref
  3. tar xzf ref.tgz -C /tmp && cp -r /tmp/ref/* tests/data/hf/
Anywhere else with torch, transformers 5.17 and safetensors:
  python3 tools/make_hf_reference.py --out tests/data/hf --ours tests/data/hf
The weights come from fixed seeds, so a re-run with the same versions gives the same files.
"""

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import traceback

import torch

T_TOKENS = 43  # not a multiple of any chunk size used: partial last chunk
PROMPT = 20
NEW = 12

# name, model_type, key prefix in the saved file, seed, and the config.
MODELS = [
    # ngroups 2, GQA 4/2 with head_dim 16 != hidden/heads, chunk 8 (6 chunks), dt clamp at
    # time_step_min = 0.01 active (dt_bias spans softplus^-1 of [0.002, 0.3]).
    dict(name="nemotron_h_gqa", model_type="nemotron_h", prefix="backbone", seed=1,
         pattern="M*-M-", vocab=512, d=48, tied=False, heads=4, head_dim=16, state=16, groups=2,
         attn=(4, 2, 16), mlp=64, chunk=8, dt_min=0.01, dt_range=(0.002, 0.3),
         conv_bias=True, use_bias=False, mlp_bias=False),
    # ngroups 1, plain multi-head attention 4/4 x 12, tied embeddings, chunk 16, 7 layers.
    dict(name="nemotron_h_mha_tied", model_type="nemotron_h", prefix="backbone", seed=2,
         pattern="M-M*-*M", vocab=520, d=48, tied=True, heads=6, head_dim=8, state=8, groups=1,
         attn=(4, 4, 12), mlp=64, chunk=16, dt_min=0.001, dt_range=(0.001, 0.1),
         conv_bias=True, use_bias=False, mlp_bias=False),
    # attention first, ngroups 4 (one head per group), GQA 8/2 x 8, biases on in/out_proj and the
    # MLP, no conv bias; saved with transformers 5's own prefix model.
    dict(name="nemotron_h_model_prefix", model_type="nemotron_h", prefix="model", seed=3,
         pattern="*-M-M", vocab=512, d=32, tied=False, heads=4, head_dim=16, state=16, groups=4,
         attn=(8, 2, 8), mlp=64, chunk=16, dt_min=0.001, dt_range=(0.001, 0.2),
         conv_bias=False, use_bias=True, mlp_bias=True),
    # Mamba2, ngroups 1, tied (as the Hub's mamba2-130m..2.7b), chunk 16.
    dict(name="mamba2_tied", model_type="mamba2", prefix="backbone", seed=4,
         layers=3, vocab=512, d=48, tied=True, heads=6, head_dim=16, state=16, groups=1,
         chunk=16, dt_range=(0.001, 0.1), limit=None, use_bias=False),
    # Mamba2, ngroups 2 (its gated norm still spans all of d_inner), untied, biases, chunk 8,
    # time_step_limit (0, 1) with dt up to 1.5: the clamp is active in the chunked scan.
    dict(name="mamba2_groups_untied", model_type="mamba2", prefix="backbone", seed=5,
         layers=2, vocab=600, d=32, tied=False, heads=4, head_dim=16, state=16, groups=2,
         chunk=8, dt_range=(0.01, 1.5), limit=(0.0, 1.0), use_bias=True),
]


def log(*a):
    print(*a, flush=True)


def nemotron_h_config(s):
    from transformers import NemotronHConfig
    names = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}
    q, kv, hd = s["attn"]
    return NemotronHConfig(
        vocab_size=s["vocab"], hidden_size=s["d"], layers_block_type=[names[c] for c in s["pattern"]],
        tie_word_embeddings=s["tied"], pad_token_id=0, bos_token_id=1, eos_token_id=2,
        num_attention_heads=q, num_key_value_heads=kv, head_dim=hd, attention_bias=False,
        intermediate_size=s["mlp"], mlp_hidden_act="relu2", mlp_bias=s["mlp_bias"],
        use_mamba_kernels=False, ssm_state_size=s["state"], mamba_num_heads=s["heads"],
        mamba_head_dim=s["head_dim"], mamba_hidden_act="silu", n_groups=s["groups"], conv_kernel=4,
        chunk_size=s["chunk"], time_step_min=s["dt_min"], time_step_max=0.1, time_step_floor=1e-4,
        use_conv_bias=s["conv_bias"], use_bias=s["use_bias"], layer_norm_epsilon=1e-5,
        residual_in_fp32=False, rescale_prenorm_residual=True, initializer_range=0.02)


def mamba2_config(s):
    from transformers import Mamba2Config
    kw = dict(
        num_heads=s["heads"], head_dim=s["head_dim"], vocab_size=s["vocab"], hidden_size=s["d"],
        state_size=s["state"], num_hidden_layers=s["layers"], layer_norm_epsilon=1e-5, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, expand=s["heads"] * s["head_dim"] // s["d"], conv_kernel=4,
        n_groups=s["groups"], use_bias=s["use_bias"], use_conv_bias=True, hidden_act="silu",
        initializer_range=0.1, residual_in_fp32=True, time_step_min=0.001, time_step_max=0.1,
        time_step_floor=1e-4, rescale_prenorm_residual=False, chunk_size=s["chunk"],
        tie_word_embeddings=s["tied"])
    if s["limit"] is not None:
        kw["time_step_limit"] = [float(s["limit"][0]), float(s["limit"][1])]
    return Mamba2Config(**kw)


def build_model(cfg):
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    except Exception as e:  # older signatures
        log("  from_config(attn_implementation=eager) failed, default attention:", repr(e))
        model = AutoModelForCausalLM.from_config(cfg)
    return model.float().eval()


def base_of(model):
    return getattr(model, model.base_model_prefix)


def heads_shared(model):
    return model.lm_head.weight.data_ptr() == base_of(model).embeddings.weight.data_ptr()


def init_weights(model, seed, dt_range):
    """Weights ~3-8x the default 0.02 init so logits are O(1) and errors show."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():
            s = p.shape
            if name.endswith("A_log"):
                v = torch.log(uniform(s, 1.0, 16.0))
            elif name.endswith(".D"):
                v = uniform(s, 0.5, 1.5)
            elif name.endswith("dt_bias"):
                lo, hi = dt_range
                dt = torch.exp(uniform(s, math.log(lo), math.log(hi)))
                v = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
            elif name.endswith("conv1d.weight"):
                v = uniform(s, -0.5, 0.5)
            elif name.endswith("conv1d.bias"):
                v = uniform(s, -0.3, 0.3)
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                v = 1.0 + normal(s, 0.2)
            elif name.endswith(".bias"):
                v = normal(s, 0.05)
            elif any(k in name for k in ("q_proj", "k_proj", "v_proj", "o_proj")):
                v = normal(s, 0.15)
            else:  # embeddings, in_proj, out_proj, up_proj, down_proj, lm_head
                v = normal(s, 0.1)
            p.copy_(v)


def hub_name(name):
    if name.startswith("model."):
        return "backbone." + name[len("model."):]
    return name


def rename_keys(path, prefix):
    """Rewrites a saved model.safetensors with every backbone./model. key under `prefix`."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    tensors, meta = {}, None
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())
        for k in keys:
            tensors[k] = f.get_tensor(k)
    out = {}
    for k, v in tensors.items():
        head, _, rest = k.partition(".")
        out[f"{prefix}.{rest}" if head in ("model", "backbone") else k] = v.contiguous()
    meta = dict(meta)
    meta.setdefault("format", "pt")
    save_file(out, path, metadata=meta)
    return sorted(keys)


def loading_info_json(info):
    return {k: sorted(str(x) for x in v) if isinstance(v, (set, list, tuple)) else str(v)
            for k, v in (info or {}).items()}


def greedy_generate(model, prompt, pad_id):
    """HF generate, greedy, 12 new tokens, through the cached decode path."""
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = None  # never stop early on a random model
        model.generation_config.pad_token_id = pad_id
    ids = prompt[None]
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW, num_beams=1,
              pad_token_id=pad_id, eos_token_id=None)
    try:
        out = model.generate(ids, output_logits=True, return_dict_in_generate=True, **kw)
        seq = out.sequences[0]
        logits = torch.stack([x[0] for x in out.logits]).float() if getattr(out, "logits", None) else None
    except Exception as e:
        log("  generate with output_logits failed, plain generate:", repr(e))
        seq = model.generate(ids, **kw)[0]
        logits = None
    return seq[PROMPT:].tolist(), logits


def full_forward_greedy(model, prompt):
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(NEW):
            nxt = model(input_ids=seq[None], use_cache=False).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt[None]])
    return seq[PROMPT:].tolist()


def make_reference(spec, out_dir):
    from safetensors.torch import save_file
    import transformers
    name = spec["name"]
    folder = os.path.join(out_dir, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    cfg = nemotron_h_config(spec) if spec["model_type"] == "nemotron_h" else mamba2_config(spec)
    torch.manual_seed(spec["seed"])
    model = build_model(cfg)
    init_weights(model, spec["seed"], spec["dt_range"])
    meta = {"name": name, "spec": spec, "transformers": transformers.__version__, "torch": torch.__version__,
            "attn_implementation": str(getattr(model.config, "_attn_implementation", None)),
            "hf_ties_lm_head": heads_shared(model)}
    if spec["tied"] and not meta["hf_ties_lm_head"]:
        # The config ties, the HF class does not (NemotronH in 5.17): make the head equal to the
        # embeddings so HF computes the tied model, and sum the two gradients below.
        with torch.no_grad():
            model.lm_head.weight.copy_(base_of(model).embeddings.weight)
        meta["note"] = "HF does not tie lm_head for this class: lm_head set equal to the embeddings"
    log(f"  {name}: {sum(p.numel() for p in model.parameters())} parameters, hf ties head: "
        f"{meta['hf_ties_lm_head']}, attention: {meta['attn_implementation']}")

    model.save_pretrained(folder)
    saved = os.path.join(folder, "model.safetensors")
    hf_keys = rename_keys(saved, spec["prefix"])
    meta["hf_saved_key_prefixes"] = sorted({k.split(".")[0] for k in hf_keys})
    meta["file_key_prefix"] = spec["prefix"]
    with open(os.path.join(folder, "config.json")) as f:
        meta["hf_config_json"] = json.load(f)

    V = spec["vocab"]
    g = torch.Generator().manual_seed(1000 + spec["seed"])
    ids = torch.randint(3, V, (T_TOKENS,), generator=g, dtype=torch.int64)

    # Forward with hooks on the residual stream, loss, backward.
    hidden = {}

    def keep(key):
        def hook(_m, _i, o):
            t = o[0] if isinstance(o, (tuple, list)) else o
            hidden[key] = t.detach()[0].float().clone()
        return hook

    base = base_of(model)
    hooks = [base.embeddings.register_forward_hook(keep("hidden.embeddings")),
             base.norm_f.register_forward_hook(keep("hidden.norm_f"))]
    for i, layer in enumerate(base.layers):
        hooks.append(layer.register_forward_hook(keep(f"hidden.layers.{i}")))
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(input_ids=ids[None], labels=ids[None], use_cache=False)
        out.loss.backward()
    for h in hooks:
        h.remove()
    logits = out.logits[0].detach().float().contiguous()
    loss = out.loss.detach().float().reshape(1)
    # The same loss from the logits, as the mean of T-1 next-token cross-entropies (a check).
    ce = torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:])
    meta["loss"] = float(loss)
    meta["loss_check_abs_diff"] = abs(float(ce) - float(loss))
    meta["logits_abs_max"] = float(logits.abs().max())
    meta["logits_std"] = float(logits.std())

    grads = {}
    for pname, p in model.named_parameters():
        key = "grad." + hub_name(pname)
        grads[key] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().clone()
    if spec["tied"] and not meta["hf_ties_lm_head"]:
        grads["grad.backbone.embeddings.weight"] += grads.pop("grad.lm_head.weight")

    prompt = ids[:PROMPT].clone()
    pad = 0 if spec["model_type"] == "nemotron_h" else 1
    with torch.no_grad():
        generated, gen_logits = greedy_generate(model, prompt, pad)
    full = full_forward_greedy(model, prompt)
    meta["generate_equals_full_forward"] = generated == full
    meta["generated_count"] = len(generated)

    tensors = {"input_ids": ids.contiguous(), "logits": logits, "loss": loss}
    tensors.update({k: v.contiguous() for k, v in grads.items()})
    tensors.update({k: v.contiguous() for k, v in hidden.items()})
    if gen_logits is not None:
        tensors["generate.logits"] = gen_logits.contiguous()
    save_file(tensors, os.path.join(folder, "reference.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "greedy.json"), "w") as f:
        json.dump({"prompt": prompt.tolist(), "generated": generated, "full_forward": full}, f)
        f.write("\n")

    # transformers reads the folder back (with the renamed keys) and computes the same logits.
    from transformers import AutoModelForCausalLM
    m2, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    m2.eval()
    with torch.no_grad():
        l2 = m2(input_ids=ids[None], use_cache=False).logits[0].float()
    sd1, sd2 = model.state_dict(), m2.state_dict()
    meta["reload"] = {
        "loading_info": loading_info_json(info),
        "logits_max_abs_diff": float((l2 - logits).abs().max()),
        "weights_differing": sorted(k for k in sd1 if k not in sd2 or not torch.equal(sd1[k], sd2[k])),
        "hf_ties_lm_head": heads_shared(m2),
    }
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, default=str)
        f.write("\n")
    log(f"  {name}: loss {meta['loss']:.5f}, |logits| max {meta['logits_abs_max']:.3f} std "
        f"{meta['logits_std']:.3f}, generated {generated}, full-forward greedy same: "
        f"{meta['generate_equals_full_forward']}, reload diff {meta['reload']['logits_max_abs_diff']:.3g}, "
        f"reload info {meta['reload']['loading_info']}, differing {meta['reload']['weights_differing']}")
    return {k: meta[k] for k in ("hf_ties_lm_head", "hf_saved_key_prefixes", "loss", "generate_equals_full_forward",
                                 "reload", "logits_abs_max")}


def tied_head_experiment(out_dir, ref_name):
    """A tied Mamba2 checkpoint that also holds a different lm_head.weight: what does HF use?"""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    src = os.path.join(out_dir, ref_name)
    tmp = os.path.join(out_dir, "_tied_experiment")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shutil.copy(os.path.join(src, "config.json"), tmp)
    sd = load_file(os.path.join(src, "model.safetensors"))
    emb = sd["backbone.embeddings.weight"]
    head = torch.full_like(emb, 0.25)
    sd["lm_head.weight"] = head
    save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    m, info = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, output_loading_info=True)
    res = {"loading_info": loading_info_json(info),
           "head_is_embeddings": bool(torch.equal(m.lm_head.weight, emb)),
           "head_is_file_head": bool(torch.equal(m.lm_head.weight, head)),
           "embeddings_are_file_embeddings": bool(torch.equal(base_of(m).embeddings.weight, emb)),
           "shared": heads_shared(m)}
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def tied_nemotron_without_head_experiment(out_dir, ref_name):
    """A NemotronH config with tie_word_embeddings true and no lm_head.weight in the file: does HF
    tie the head, or leave it missing (randomly initialised)?"""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM
    src = os.path.join(out_dir, ref_name)
    tmp = os.path.join(out_dir, "_tied_nemotron_experiment")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shutil.copy(os.path.join(src, "config.json"), tmp)
    sd = load_file(os.path.join(src, "model.safetensors"))
    sd.pop("lm_head.weight", None)
    emb = sd["backbone.embeddings.weight"]
    save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    m, info = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, output_loading_info=True)
    res = {"loading_info": loading_info_json(info),
           "head_is_embeddings": bool(torch.equal(m.lm_head.weight, emb)),
           "shared": heads_shared(m)}
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def check_ours(ours_dir, out_dir):
    """Loads each hybridlm-written folder in transformers; checks weights and records logits."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM
    results = {}
    for name in sorted(os.listdir(ours_dir)):
        folder = os.path.join(ours_dir, name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        log(f"ours: {name}")
        res = {}
        try:
            cfg = AutoConfig.from_pretrained(folder)
            res["config_class"] = type(cfg).__name__
            d = cfg.to_dict()
            res["config_seen"] = {k: d.get(k) for k in (
                "layers_block_type", "head_dim", "n_groups", "time_step_limit", "time_step_min",
                "tie_word_embeddings", "dtype", "torch_dtype", "num_key_value_heads", "mamba_num_heads",
                "num_heads", "expand", "use_bias", "chunk_size")}
            model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                               output_loading_info=True)
            model.eval()
            res["model_class"] = type(model).__name__
            res["loading_info"] = loading_info_json(info)
            res["hf_ties_lm_head"] = heads_shared(model)
            params = {hub_name(k): v for k, v in model.state_dict().items()}
            differing, absent = [], []
            with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
                for k in f.keys():
                    t = f.get_tensor(k).float()
                    if k not in params:
                        absent.append(k)
                    elif not torch.equal(params[k], t):
                        differing.append(k)
            res["file_tensors_not_in_model"] = absent
            res["file_tensors_differing"] = differing
            V = cfg.vocab_size
            g = torch.Generator().manual_seed(77)
            ids = torch.randint(3, V, (29,), generator=g, dtype=torch.int64)
            with torch.no_grad():
                logits = model(input_ids=ids[None], use_cache=False).logits[0].float().contiguous()
                pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
                generated, _ = greedy_generate(model, ids[:PROMPT], pad)
            res["logits_abs_max"] = float(logits.abs().max())
            res["generated"] = generated
            dst = os.path.join(out_dir, name)
            os.makedirs(dst, exist_ok=True)
            save_file({"input_ids": ids, "logits": logits}, os.path.join(dst, "hf_logits.safetensors"),
                      metadata={"format": "pt"})
            res["ok"] = not absent and not differing and not res["loading_info"].get("missing_keys")
        except Exception:
            res["error"] = traceback.format_exc()
            log(res["error"])
        with open(os.path.join(out_dir, name, "hf_check.json") if os.path.isdir(os.path.join(out_dir, name))
                  else os.path.join(out_dir, f"{name}_hf_check.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
            f.write("\n")
        log(f"  {json.dumps(res, default=str)[:1500]}")
        results[name] = res
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ours", default=None, help="folder of hybridlm-written checkpoints to load")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(min(8, os.cpu_count() or 1))

    import transformers
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    for mod in ("mamba_ssm", "causal_conv1d", "kernels", "safetensors"):
        env[f"has_{mod}"] = importlib.util.find_spec(mod) is not None
    log("environment:", json.dumps(env))
    if env["has_mamba_ssm"] or env["has_causal_conv1d"] or env["has_kernels"]:
        log("WARNING: fused kernels are importable: the torch path may not be the one used")
    report = {"env": env, "models": {}, "ours": {}, "experiments": {}}

    for spec in MODELS:
        if args.only and spec["name"] not in args.only.split(","):
            continue
        log(f"model {spec['name']} ({spec['model_type']})")
        try:
            report["models"][spec["name"]] = make_reference(spec, args.out)
        except Exception:
            tb = traceback.format_exc()
            log(tb)
            report["models"][spec["name"]] = {"error": tb}

    try:
        if "mamba2_tied" in report["models"] and "error" not in report["models"]["mamba2_tied"]:
            report["experiments"]["mamba2_tied_with_other_head_in_file"] = tied_head_experiment(args.out, "mamba2_tied")
            log("tied-head experiment:", json.dumps(report["experiments"]))
        if "nemotron_h_mha_tied" in report["models"] and "error" not in report["models"]["nemotron_h_mha_tied"]:
            report["experiments"]["nemotron_h_tied_without_head_in_file"] = tied_nemotron_without_head_experiment(
                args.out, "nemotron_h_mha_tied")
            log("tied nemotron experiment:", json.dumps(report["experiments"]))
    except Exception:
        report["experiments"]["error"] = traceback.format_exc()
        log(report["experiments"]["error"])

    if args.ours:
        try:
            report["ours"] = check_ours(args.ours, args.out)
        except Exception:
            report["ours"] = {"error": traceback.format_exc()}
            log(report["ours"]["error"])

    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    report["total_bytes"] = total
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
        f.write("\n")
    log(f"total size {total / 1e6:.2f} MB")
    log("report:", json.dumps(report, default=str)[:6000])


if __name__ == "__main__":
    main()
