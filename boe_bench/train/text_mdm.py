"""Train ``text_mdm``: a small masked diffusion LM with LLaDA's architecture on d1's Sudoku
and Countdown formats, saved in LLaDA's released layout and loaded by ``models/llada.py``.

    python -m boe_bench.train.text_mdm --out runs/text_mdm           # or: make train_text_mdm

Architecture (LLaDA-8B's, scaled down): bidirectional attention, RoPE (theta 500000, rotated
in float32: ``rope_full_precision``), RMSNorm, SwiGLU MLP, untied input and output
embeddings, no biases; the network is the same stock ``LlamaForCausalLM`` the LLaDA loader
builds, run through the same ``TransformerDenoiser`` forward the samplers call, so training
and decoding compute one function. Special tokens carry LLaDA's names and roles:
``<|mdm_mask|>`` (mask), ``<|endoftext|>`` (EOS, the SFT padding), ``<|eot_id|>`` (end of
the assistant turn), ``<|startoftext|>`` (BOS), and a chat template of LLaDA-Instruct's shape.

Tokenizer: byte-level BPE trained with ``tokenizers`` on the training texts, with every digit
its own pre-token (so puzzles and numbers are read digit by digit) and no whitespace split
(so BPE merges across words and the fixed instruction text compresses to a few tokens).

Objective: LLaDA's SFT loss (Nie et al. 2025, arXiv 2502.09992, Eq. 5, normalised by the
response length as in LLaDA's GUIDELINES.md):

    L = -E_{t, p0, r0, rt} [ 1/t * 1/|r0| * sum_{i: rt_i = M} log p(r0_i | p0, rt) ],

with t ~ U(eps, 1) per example (eps = 1e-3), each response token masked independently with
probability t, the prompt never masked, and the response padded with ``<|endoftext|>`` to the
end of the canvas (after the ``<|eot_id|>`` that ends the turn), the padding being part of
r0 (it is how the model learns where to stop). The canvas (response region) is 128 or 256
tokens, drawn per batch (``CANVAS_WEIGHTS``), the two generation lengths Table 2 evaluates.

Deterministic under ``--seed``: data (``train/text_data.py``), initialisation and masking
draw from seeded generators, torch runs with a fixed thread count, and the tokenizer is
trained on a seed-determined corpus.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F

from boe_bench.cpu_memory import keep_freed_memory_or_fail
from boe_bench.train.text_data import GENERATORS, Example, example_stream

MASK, EOS, EOT, BOS = "<|mdm_mask|>", "<|endoftext|>", "<|eot_id|>", "<|startoftext|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [EOS, BOS, MASK, EOT, HEADER_START, HEADER_END]
# LLaDA-Instruct's turn layout: BOS, then per message a role header, a blank line, the
# trimmed content and <|eot_id|>; the generation prompt opens the assistant's header.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Response canvases and how often each is drawn: Table 2's two generation lengths, the
# shorter more often (it costs half as much and the answers fit it with room to spare).
CANVASES = (128, 256)
CANVAS_WEIGHTS = (0.75, 0.25)
T_EPS = 1e-3


def task_objects():
    from boe_bench.tasks.countdown import Countdown
    from boe_bench.tasks.sudoku import Sudoku

    return {"sudoku": Sudoku(), "countdown": Countdown()}


def corpus(tasks, seed: int, n: int) -> tuple[list[Example], list[str]]:
    """The first ``n`` examples of the seed's stream and their full texts (the chat-templated
    prompt as the runner builds it, the prefill, the response): what the tokenizer is trained
    on and PC-Sampler's background frequencies are counted over."""
    from jinja2 import Template

    template = Template(CHAT_TEMPLATE)
    examples = list(islice(example_stream(seed), n))
    texts = []
    for e in examples:
        messages = [{"role": "user", "content": tasks[e.task].prompt_text(e.doc)}]
        rendered = template.render(messages=messages, add_generation_prompt=True, bos_token="")
        texts.append(rendered + tasks[e.task].assistant_prefix + e.response)
    return examples, texts


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE over ``texts`` (digits split individually), as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   mask_token=MASK, additional_special_tokens=[EOT, HEADER_START, HEADER_END])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def prompt_ids(tasks, tokenizer, example: Example) -> list[int]:
    """Exactly what the runner feeds the model for this document."""
    return tasks[example.task].prompt_ids(example.doc, tokenizer)


def response_ids(tokenizer, example: Example) -> list[int]:
    return tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids(EOT)]


def llada_config(vocab_size: int, d_model: int, n_layers: int, n_heads: int, mlp_hidden: int, mask_id: int,
                 eos_id: int, max_len: int) -> dict:
    """config.json in LLaDA's released field names (every field the loader checks set explicitly)."""
    return {
        "architectures": ["LLaDAModelLM"], "model_type": "llada",
        "d_model": d_model, "n_heads": n_heads, "n_kv_heads": n_heads, "n_layers": n_layers,
        "mlp_hidden_size": mlp_hidden, "mlp_ratio": mlp_hidden / d_model,
        "vocab_size": vocab_size, "embedding_size": vocab_size, "max_sequence_length": max_len,
        "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms", "rms_norm_eps": 1e-5,
        "rope": True, "rope_theta": 500000.0, "rope_full_precision": True, "weight_tying": False,
        "include_bias": False, "include_qkv_bias": False, "bias_for_layer_norm": False,
        "layer_norm_with_affine": True, "alibi": False, "attention_layer_norm": False, "input_emb_norm": False,
        "scale_logits": False, "clip_qkv": None, "block_group_size": 1, "multi_query_attention": None,
        "mask_token_id": mask_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
    }


def build_denoiser(config: dict, tokenizer, seed: int):
    """A randomly initialised model, through the loader's own config mapping and forward."""
    from transformers import LlamaForCausalLM

    from boe_bench.models.llada import llama_config_from_llada
    from boe_bench.models.transformer import TransformerDenoiser

    hf_config = llama_config_from_llada(config)
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(hf_config)
    eos = (config["eos_token_id"], tokenizer.convert_tokens_to_ids(EOT))
    model = TransformerDenoiser(hf, tokenizer, config["mask_token_id"], eos, name="text_mdm(training)",
                                rope_full_precision=True)
    hf.requires_grad_(True)
    return model


def collate(tasks, tokenizer, examples: list[Example], canvas: int, mask_id: int, eos_id: int,
            generator: torch.Generator):
    """(noisy ids, clean ids, attention mask, loss weights) of one batch.

    Prompts are left-padded (attention mask 0, as the samplers pad them); each response is
    followed by EOS to ``canvas`` tokens; response tokens are masked with probability t and
    weighted 1 / (t * canvas), the LLaDA SFT weight (every response here spans the canvas)."""
    prompts = [prompt_ids(tasks, tokenizer, e) for e in examples]
    responses = [response_ids(tokenizer, e) for e in examples]
    width = max(map(len, prompts))
    rows, masks = [], []
    for prompt, response in zip(prompts, responses):
        if len(response) > canvas:
            raise ValueError(f"a response of {len(response)} tokens does not fit a canvas of {canvas}")
        pad = width - len(prompt)
        rows.append([eos_id] * pad + prompt + response + [eos_id] * (canvas - len(response)))
        masks.append([0] * pad + [1] * (len(prompt) + canvas))
    clean = torch.tensor(rows)
    attention = torch.tensor(masks)
    b = len(examples)
    t = (1 - T_EPS) * torch.rand(b, 1, generator=generator) + T_EPS
    in_response = torch.zeros_like(clean, dtype=torch.bool)
    in_response[:, width:] = True
    masked = (torch.rand(clean.shape, generator=generator) < t) & in_response
    noisy = clean.masked_fill(masked, mask_id)
    weights = masked.float() / (t * canvas)
    return noisy, clean, attention, weights


def sft_loss(model, noisy, clean, attention, weights) -> torch.Tensor:
    logits = model(noisy, attention_mask=attention)
    token_loss = F.cross_entropy(logits.flatten(0, 1).float(), clean.flatten(), reduction="none")
    return (token_loss * weights.flatten()).sum() / noisy.shape[0]


def to_llada_state(model) -> dict[str, torch.Tensor]:
    """The network's weights under LLaDA's checkpoint names (the loader's renaming, inverted)."""
    from boe_bench.models.llada import BLOCK_KEY_MAP, KEY_MAP, llada_key_to_llama

    state = model.hf.state_dict()
    llada_keys = list(KEY_MAP) + [f"model.transformer.blocks.{i}.{k}.weight"
                                  for i in range(model.hf.config.num_hidden_layers) for k in BLOCK_KEY_MAP]
    names = {llada_key_to_llama(key): key for key in llada_keys}
    missing = sorted(set(state) - set(names))
    if missing:
        raise RuntimeError(f"weights without a LLaDA name: {missing}")
    return {names[k]: v for k, v in state.items()}


def token_freq_table(tokenizer, texts: list[str]) -> dict:
    """PC-Sampler's background table for this tokenizer, counted over the training texts."""
    from boe_bench.train.token_freq import count_tokens, frequency_table

    return frequency_table(count_tokens(texts, tokenizer), "text_mdm", len(tokenizer))


def save_checkpoint(model, tokenizer, config: dict, out: Path, dtype: torch.dtype, freq: dict | None = None) -> None:
    """config.json, model.safetensors (``dtype``), the tokenizer files and (given) PC-Sampler's
    frequency table, in LLaDA's layout."""
    from safetensors.torch import save_file

    from boe_bench.models.llada import TOKEN_FREQ_FILE

    out.mkdir(parents=True, exist_ok=True)
    if freq is not None:
        (out / TOKEN_FREQ_FILE).write_text(json.dumps(freq))
    state = {k: v.detach().to(dtype).contiguous() for k, v in to_llada_state(model).items()}
    config = dict(config, torch_dtype=str(dtype).removeprefix("torch."))
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    tokenizer.save_pretrained(str(out))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/text_mdm", help="checkpoint directory (the shipped one: boe_bench/data/text_mdm)")
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp-hidden", type=int, default=384)
    p.add_argument("--vocab", type=int, default=1600)
    p.add_argument("--tokenizer-corpus", type=int, default=4000, help="examples the tokenizer is trained on")
    p.add_argument("--mix", default="sudoku,sudoku,countdown",
                   help="the training stream's task cycle (Sudoku twice per Countdown by default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=500, help="also keep a checkpoint every this many steps")
    p.add_argument("--save-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--time-limit-min", type=float, default=58.0, help="stop (and save) after this many minutes")
    args = p.parse_args(argv)
    unknown = sorted(set(args.mix.split(",")) - set(GENERATORS))
    if unknown:
        p.error(f"--mix names unknown tasks {unknown}; known: {sorted(GENERATORS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory_or_fail()
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_args.json").write_text(json.dumps(vars(args), indent=1) + "\n")
    tasks = task_objects()

    corpus_examples, texts = corpus(tasks, args.seed, args.tokenizer_corpus)
    tokenizer = build_tokenizer(texts, args.vocab)
    freq = token_freq_table(tokenizer, texts)
    mask_id, eos_id = tokenizer.convert_tokens_to_ids(MASK), tokenizer.convert_tokens_to_ids(EOS)
    config = llada_config(len(tokenizer), args.d_model, args.layers, args.heads, args.mlp_hidden, mask_id, eos_id,
                          max_len=512)
    model = build_denoiser(config, tokenizer, args.seed)
    params = sum(p.numel() for p in model.parameters())
    lengths = {e.task: len(prompt_ids(tasks, tokenizer, e)) for e in corpus_examples[:2]}
    print(f"text_mdm: {params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, prompt tokens {lengths}", flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(args.steps // 30, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.1 + 0.45 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    generator = torch.Generator().manual_seed(args.seed)
    stream = example_stream(args.seed + 1, tuple(args.mix.split(",")))  # training stream (the tokenizer's corpus used seed args.seed)
    dtype = getattr(torch, args.save_dtype)
    log_path = out / "train_log.csv"
    started = time.time()
    cpu_started = time.process_time()
    model.train()
    with log_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "canvas", "wall_s", "cpu_s"])
        smoothed = None
        for step in range(1, args.steps + 1):
            canvas = CANVASES[int(torch.multinomial(torch.tensor(CANVAS_WEIGHTS), 1, generator=generator))]
            batch = collate(tasks, tokenizer, list(islice(stream, args.batch)), canvas, mask_id, eos_id, generator)
            loss = sft_loss(model, *batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
            elapsed = time.time() - started
            if step % 10 == 0 or step == args.steps:
                writer.writerow([step, round(loss.item(), 5), f"{schedule.get_last_lr()[0]:.3e}", canvas,
                                 round(elapsed, 1), round(time.process_time() - cpu_started, 1)])
                f.flush()
            if step % 50 == 0:
                print(f"step {step}/{args.steps} loss {smoothed:.4f} {elapsed / 60:.1f} min", flush=True)
            last = step == args.steps or elapsed > args.time_limit_min * 60
            if step % args.save_every == 0 or last:
                model.eval()
                save_checkpoint(model, tokenizer, config, out / f"step{step:05d}", dtype, freq)
                model.train()
            if last:
                break
    print(f"wrote {out}/step* ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
