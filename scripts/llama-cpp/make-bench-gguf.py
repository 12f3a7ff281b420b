#!/usr/bin/env python3
"""Writes a GGUF of a benchmark config (bench/small.config.json, bench/moe.config.json) with random
weights, for timing llama.cpp on the same shapes as our benchmarks. Speed does not depend on the
values (except MoE routing balance: the router is random and unbiased), so the weights are drawn
here instead of converted from a checkpoint; llama.cpp's own converter needs torch, which this
project does not install. Needs numpy and llama.cpp's gguf-py (PYTHONPATH=<llama.cpp>/gguf-py).

Usage: make-bench-gguf.py CONFIG.json OUT.gguf [f32|bf16]
"""
import json
import sys

import numpy as np
import gguf


def main() -> None:
    config_path, out_path = sys.argv[1], sys.argv[2]
    dtype = sys.argv[3] if len(sys.argv) > 3 else "f32"
    cfg = json.load(open(config_path))
    pattern: str = cfg["hybrid_override_pattern"]
    moe = "E" in pattern
    arch = gguf.MODEL_ARCH.NEMOTRON_H_MOE if moe else gguf.MODEL_ARCH.NEMOTRON_H
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    rng = np.random.default_rng(0)

    hidden = cfg["hidden_size"]
    layers = len(pattern)
    head_dim = cfg["head_dim"]
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    m_heads, m_head_dim = cfg["mamba_num_heads"], cfg["mamba_head_dim"]
    d_inner = m_heads * m_head_dim
    groups, state, conv = cfg["n_groups"], cfg["ssm_state_size"], cfg["conv_kernel"]
    vocab = cfg["vocab_size"]

    w = gguf.GGUFWriter(out_path, arch_name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_vocab_size(vocab)
    # A layer is recurrent when its kv head count and feed-forward length are both 0.
    w.add_head_count(n_head)
    w.add_head_count_kv([n_kv if c == "*" else 0 for c in pattern])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    ff = cfg["moe_intermediate_size"] if moe else cfg["intermediate_size"]
    w.add_feed_forward_length([ff if c in "-E" else 0 for c in pattern])
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_ssm_conv_kernel(conv)
    w.add_ssm_state_size(state)
    w.add_ssm_group_count(groups)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_time_step_rank(m_heads)
    if moe:
        w.add_expert_count(cfg["n_routed_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        w.add_expert_shared_feed_forward_length(cfg["moe_shared_expert_intermediate_size"])
        w.add_expert_shared_count(cfg["n_shared_experts"])
        w.add_expert_weights_norm(cfg["norm_topk_prob"])
        w.add_expert_weights_scale(cfg["routed_scaling_factor"])
        w.add_expert_group_count(cfg["n_group"])
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if dtype == "bf16" else gguf.LlamaFileType.ALL_F32)

    # A byte-level-free vocabulary of placeholder pieces: llama-bench feeds token ids directly.
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([gguf.TokenType.NORMAL] * vocab)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])

    def add(name: str, shape: tuple[int, ...], scale: float = 0.02, value: float | None = None, keep_f32: bool = False) -> None:
        data = np.full(shape, value, np.float32) if value is not None else (rng.standard_normal(shape, np.float32) * scale)
        if dtype == "bf16" and len(shape) >= 2 and min(shape) > 1 and not keep_f32:
            w.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, data)

    # numpy shapes are ggml's dims reversed ([out, in] like HF's Linear weights).
    add("token_embd.weight", (vocab, hidden))
    add("output_norm.weight", (hidden,), value=1.0)
    add("output.weight", (vocab, hidden))
    conv_dim = d_inner + 2 * groups * state
    for i, c in enumerate(pattern):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", (hidden,), value=1.0)
        if c == "M":
            add(p + "ssm_in.weight", (2 * d_inner + 2 * groups * state + m_heads, hidden))
            add(p + "ssm_conv1d.weight", (conv_dim, conv), scale=0.3, keep_f32=True)
            add(p + "ssm_conv1d.bias", (conv_dim,), value=0.0)
            add(p + "ssm_dt.bias", (m_heads,), value=-2.0)
            add(p + "ssm_a", (m_heads, 1), value=-1.0)
            add(p + "ssm_d", (m_heads, 1), value=1.0)
            add(p + "ssm_norm.weight", (groups, d_inner // groups), value=1.0, keep_f32=True)
            add(p + "ssm_out.weight", (hidden, d_inner))
        elif c == "*":
            add(p + "attn_q.weight", (n_head * head_dim, hidden))
            add(p + "attn_k.weight", (n_kv * head_dim, hidden))
            add(p + "attn_v.weight", (n_kv * head_dim, hidden))
            add(p + "attn_output.weight", (hidden, n_head * head_dim))
        elif c == "-":
            add(p + "ffn_up.weight", (ff, hidden))
            add(p + "ffn_down.weight", (hidden, ff))
        elif c == "E":
            e, shared = cfg["n_routed_experts"], cfg["moe_shared_expert_intermediate_size"]
            add(p + "ffn_gate_inp.weight", (e, hidden), keep_f32=True)
            add(p + "exp_probs_b.bias", (e,), value=0.0)
            add(p + "ffn_up_exps.weight", (e, ff, hidden))
            add(p + "ffn_down_exps.weight", (e, hidden, ff))
            add(p + "ffn_up_shexp.weight", (shared, hidden))
            add(p + "ffn_down_shexp.weight", (hidden, shared))
        else:
            raise SystemExit(f"{config_path}: hybrid_override_pattern has an unknown layer '{c}'")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
