#!/usr/bin/env python3
"""The PyTorch peer of `tessera transformer train`, for same-time comparisons.

It trains torch_bench.py's Seq2SeqTransformer (../shared/bench: nn.Transformer, post-norm,
no final norms, one embedding for source, target and the pre-softmax projection, scaled by
sqrt(d_model), sinusoidal positions) with the recipe, flags and defaults of `tessera
transformer train` (cli/src/transformer.rs; transformer/src/train.rs; data/src/batch.rs):

- data: tessera's BPE, from a tessera checkpoint's "bpe" metadata (--tokenizer-from); pairs
  with 1 to max_len - 1 tokens on both sides; source ids + <eos>, target <bos> + ids in,
  ids + <eos> out. Batches are tessera's, exactly: its generator (ChaCha8, rand 0.9) is
  reproduced, so every epoch shuffles, sorts by length, cuts batches of batch * (longest
  source + longest target) <= --max-tokens and shuffles them as tessera does.
- model: Transformer::new's distributions: embeddings N(0, 1/d_model), in_proj Xavier,
  other weights and linear biases U(+-1/sqrt(fan_in)), attention biases 0, LayerNorm 1/0;
  dropout on embedding sums, attention probabilities, sublayer outputs and in the FFN. The
  draws and dropout masks differ from tessera's.
- step: label-smoothed cross-entropy, mean over non-padding target tokens; Adam (0.9, 0.98,
  1e-9), lr = lr_factor * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5), s = step + 1.
- loop: the budget is checked before every step (elapsed_s counts steps and evaluations);
  every --eval-every steps and at the end the validation loss (unsmoothed, per target
  token, no dropout) goes to OUT/metrics.jsonl with tessera's keys; at the end
  OUT/model.safetensors with tessera's names and metadata, for `tessera transformer eval`.
  (tessera also writes checkpoints every --save-every steps inside its timed loop.)

--init-from CHECKPOINT starts from tessera's weights and configuration; a training
checkpoint also gives its step, epoch, data position, Adam moments, max_tokens, warmup,
lr_factor and seed: the run continues tessera's.

The 60-minute comparison on Multi30K de->en, from the repository root (tessera's BPE
training is deterministic: the 1-step run's vocabulary is the 60-minute run's):

    D=../shared/data/multi30k; T=target/release/tessera
    DATA="--src $D/train.de.gz --tgt $D/train.en.gz \\
          --valid-src $D/val.de.gz --valid-tgt $D/val.en.gz"
    $T transformer train $DATA --warmup 400 --steps 1 --out runs/m30k-bpe
    $T transformer train $DATA --warmup 400 --threads 1 --minutes 60 --out runs/m30k-tessera &
    python transformer/scripts/train_torch.py $DATA --warmup 400 \\
        --tokenizer-from runs/m30k-bpe/checkpoint.safetensors --threads 1 --minutes 60 \\
        --out runs/m30k-torch &
    wait
    for m in runs/m30k-tessera/checkpoint.safetensors runs/m30k-torch/model.safetensors; do
        $T transformer eval --checkpoint $m --beam 4 \\
            --src $D/test_2016_flickr.de.gz --ref $D/test_2016_flickr.en.gz
    done

Needs torch, safetensors and tokenizers (pip install tokenizers).
"""

import argparse
import gzip
import json
import math
import os
import signal
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "..", "shared", "bench"))
from torch_bench import Seq2SeqTransformer  # noqa: E402

M32, M64 = (1 << 32) - 1, (1 << 64) - 1


class Rng:
    """tessera's Rng::seed: ChaCha8Rng::seed_from_u64 (a PCG32 key), rand 0.9's below()."""

    def __init__(self, seed, rounds=8):
        key = []
        for _ in range(8):
            seed = (seed * 6364136223846793005 + 11634580027462260723) & M64
            x, rot = (((seed >> 18) ^ seed) >> 27) & M32, seed >> 59
            key.append(((x >> rot) | (x << (32 - rot))) & M32)
        self.state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + key
        self.rounds, self.block, self.words = rounds, 0, []

    def next_u32(self):
        if not self.words:
            s = self.state + [self.block & M32, self.block >> 32, 0, 0]
            x = list(s)

            def qr(a, b, c, d):
                for p, q, r, k in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
                    x[p] = (x[p] + x[q]) & M32
                    v = x[r] ^ x[p]
                    x[r] = ((v << k) | (v >> (32 - k))) & M32

            for _ in range(self.rounds // 2):
                qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
                qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)
            self.words = [(a + b) & M32 for a, b in zip(x, s)][::-1]
            self.block += 1
        return self.words.pop()

    def below(self, n):
        """random_range(0..n) for usize: Canon's method on u32 (one extra word rarely)."""
        hi, lo = divmod(self.next_u32() * n, 1 << 32)
        if lo > (-n) & M32 and lo + ((self.next_u32() * n) >> 32) > M32:
            hi += 1
        return hi

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def token_batches(lengths, max_tokens, rng):
    """tessera_data::token_batches: indices of each batch."""
    for i, (s, t) in enumerate(lengths):
        if s + t > max_tokens:
            raise SystemExit(f"pair {i} has {s} + {t} tokens, more than {max_tokens}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable, as Rust's sort_by_key
    batches, current, max_s, max_t = [], [], 0, 0
    for i in order:
        s, t = lengths[i]
        ns, nt = max(max_s, s), max(max_t, t)
        if current and (len(current) + 1) * (ns + nt) > max_tokens:
            batches.append(current)
            current, max_s, max_t = [], s, t
        else:
            max_s, max_t = ns, nt
        current.append(i)
    batches.append(current)
    rng.shuffle(batches)
    return batches


def read_lines(path):
    """tessera_data::read_lines: gunzipped when the name ends in .gz; Rust's str::lines."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        *lines, last = f.read().decode("utf-8").split("\n")
    return [s[:-1] if s.endswith("\r") else s for s in lines] + ([last] if last else [])


def read_pairs(src, tgt):
    s, t = read_lines(src), read_lines(tgt)
    if len(s) != len(t) or not s:
        raise SystemExit(f"{src} has {len(s)} lines and {tgt} {len(t)}")
    return list(zip(s, t))


def encode_pairs(tok, pairs, max_len):
    """cli encode_pairs: BPE ids, pairs with 1..max_len-1 tokens on both sides kept."""
    src, tgt = ([e.ids for e in tok.encode_batch([p[i] for p in pairs], add_special_tokens=False)]
                for i in (0, 1))
    return [(s, t) for s, t in zip(src, tgt) if 0 < len(s) < max_len and 0 < len(t) < max_len]


def padded(rows, pad):
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def make_batch(pairs, idx, bos=1, eos=2, pad=0):
    """Corpus::batch: source + eos, bos + target, target + eos, padded."""
    src = padded([pairs[i][0] + [eos] for i in idx], pad)
    tgt_in = padded([[bos] + pairs[i][1] for i in idx], pad)
    tgt_out = padded([pairs[i][1] + [eos] for i in idx], pad)
    return src, tgt_in, tgt_out, sum(len(pairs[i][1]) + 1 for i in idx)


def lengths(pairs):
    return [(len(s) + 1, len(t) + 1) for s, t in pairs]


def forward(model, src, tgt_in, pad=0):
    """Logits [B, T, V] with tessera's masks: source and target padding, causal."""
    t = tgt_in.shape[1]
    causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    src_pad, tgt_pad = src == pad, tgt_in == pad
    tr = model.transformer
    memory = tr.encoder(model.embed_tokens(src), src_key_padding_mask=src_pad)
    h = tr.decoder(model.embed_tokens(tgt_in), memory, tgt_mask=causal,
                   tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    return model.logits(h)


@torch.no_grad()
def evaluate_loss(model, pairs, max_tokens, pad=0):
    """tessera's evaluate_loss: mean cross-entropy (no smoothing) per target token."""
    model.eval()
    total, count = 0.0, 0
    for idx in token_batches(lengths(pairs), max_tokens, Rng(0)):
        src, tgt_in, tgt_out, _ = make_batch(pairs, idx)
        logits = forward(model, src, tgt_in)
        ce = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=pad,
                             reduction="none")
        total += ce.double().sum().item()
        count += int((tgt_out != pad).sum())
    model.train()
    return torch.tensor(total / max(count, 1), dtype=torch.float32).item()  # an f32, as tessera


def tessera_config(a, vocab):
    """TransformerConfig::to_metadata of the flags' model, or --init-from's (and its recipe)."""
    cfg = {"model": "tessera-transformer", "src_vocab": vocab, "tgt_vocab": vocab,
           "share_embeddings": "true", "d_model": a.d_model, "heads": a.heads,
           "d_k": a.d_model // a.heads, "d_v": a.d_model // a.heads, "d_ff": a.d_ff,
           "encoder_layers": a.layers, "decoder_layers": a.layers, "dropout": a.dropout,
           "label_smoothing": a.label_smoothing, "positional": "sinusoidal", "max_len": 512,
           "norm_first": "false", "final_norms": "false"}
    if a.init_from:
        meta = metadata(a.init_from)
        if any(k not in meta for k in cfg):
            raise SystemExit(f"{a.init_from}: not a tessera Transformer checkpoint")
        cfg = {k: meta[k] for k in cfg}
        for k in ("max_tokens", "warmup", "lr_factor", "seed"):  # as tessera's --resume
            if k in meta:
                setattr(a, k, type(getattr(a, k))(meta[k]))
    d, h = int(cfg["d_model"]), int(cfg["heads"])
    if (cfg["share_embeddings"], cfg["positional"], cfg["norm_first"], cfg["final_norms"]) \
            != ("true", "sinusoidal", "false", "false") or int(cfg["d_k"]) * h != d \
            or int(cfg["d_v"]) * h != d:
        raise SystemExit(f"{cfg}: not the post-norm model with one vocabulary of this script")
    return cfg


def build_model(cfg, seed):
    """torch_bench's model with Transformer::new's distributions (not nn.Transformer's)."""
    torch.manual_seed(seed)
    sizes = [int(cfg[k]) for k in ("src_vocab", "d_model", "heads", "d_ff", "encoder_layers",
                                   "decoder_layers")]
    model = Seq2SeqTransformer(*sizes, dropout=float(cfg["dropout"]), max_len=int(cfg["max_len"]))
    with torch.no_grad():
        nn.init.normal_(model.embed.weight, 0.0, sizes[1] ** -0.5)
        for m in model.transformer.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()  # U(+-1/sqrt(fan_in)) weight and bias
        for m in model.transformer.modules():
            if isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()  # Xavier in_proj; in_proj and out_proj biases 0
    return model


def load_tessera(path, model, opt):
    """tessera's weights; from a training checkpoint also (step, epoch, position) and Adam."""
    init = load_file(path)
    missing = [n for n in model.state_dict() if n not in init]
    if missing:
        raise SystemExit(f"{path}: no {missing[:3]}")
    model.load_state_dict({n: init[n] for n in model.state_dict()})
    if "train.step" not in init:
        return 0, 0, 0
    for n, q in model.named_parameters():
        opt.state[q] = {"step": init[f"optim.{n}.step"].reshape(()).clone(),
                        "exp_avg": init[f"optim.{n}.exp_avg"].clone(),
                        "exp_avg_sq": init[f"optim.{n}.exp_avg_sq"].clone()}
    return tuple((int(init[f"train.{k}"][0]) << 20) | int(init[f"train.{k}"][1])
                 for k in ("step", "epoch", "position"))


def metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("--valid-src")
    p.add_argument("--valid-tgt")
    p.add_argument("--tokenizer-from", help="a tessera checkpoint (default: --init-from)")
    p.add_argument("--init-from", help="start from (or continue) a tessera checkpoint")
    for flag, kind, default in (  # tessera's flags and defaults
            ("--d-model", int, 256), ("--heads", int, 4), ("--d-ff", int, 1024),
            ("--layers", int, 3), ("--dropout", float, 0.1), ("--label-smoothing", float, 0.1),
            ("--max-tokens", int, 4096), ("--warmup", int, 4000), ("--lr-factor", float, 1.0),
            ("--steps", int, 20000), ("--eval-every", int, 500), ("--seed", int, 0)):
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--minutes", type=float)
    p.add_argument("--threads", "-t", type=int)
    p.add_argument("--out", default="runs/transformer-torch")
    a = p.parse_args()
    if a.threads is not None:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(a.threads)
    bpe_path = a.tokenizer_from or a.init_from
    if bpe_path is None or a.eval_every < 1:
        raise SystemExit("give --tokenizer-from (or --init-from), and --eval-every >= 1")
    bpe_json = metadata(bpe_path).get("bpe")
    if bpe_json is None:
        raise SystemExit(f"{bpe_path}: no BPE vocabulary in the metadata")
    tok = Tokenizer.from_str(bpe_json)
    cfg = tessera_config(a, tok.get_vocab_size(with_added_tokens=True))
    max_len, d = int(cfg["max_len"]), int(cfg["d_model"])
    train = encode_pairs(tok, read_pairs(a.src, a.tgt), max_len)
    valid = encode_pairs(tok, read_pairs(a.valid_src, a.valid_tgt) if a.valid_src and a.valid_tgt
                         else read_pairs(a.src, a.tgt)[:500], max_len)
    model = build_model(cfg, a.seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)
    step, epoch, position = load_tessera(a.init_from, model, opt) if a.init_from else (0, 0, 0)
    label_smoothing = float(cfg["label_smoothing"])

    def epoch_batches(e):
        rng = Rng((a.seed * 0x9E3779B97F4A7C15 + e) & M64)
        return token_batches(lengths(train), a.max_tokens, rng)

    batches = epoch_batches(epoch)
    print(f"{a.src} -> {a.tgt}: {len(train)} training pairs, {len(valid)} for validation, "
          f"BPE vocabulary {cfg['src_vocab']}\nd_model {d}, {cfg['heads']} heads, d_ff "
          f"{cfg['d_ff']}, {cfg['encoder_layers']}+{cfg['decoder_layers']} layers, dropout "
          f"{cfg['dropout']}, {sum(q.numel() for q in model.parameters())} parameters; "
          f"{len(batches)} batches of <={a.max_tokens} tokens per epoch; from step {step}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    os.makedirs(a.out, exist_ok=True)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    model.train()
    start = time.perf_counter()
    budget = a.minutes * 60.0 if a.minutes is not None else None
    window_t, window_tokens, window_loss, window_n = time.perf_counter(), 0, 0.0, 0
    last_eval = None
    while True:  # tessera's loop: stop, evaluate, step
        done = (step >= a.steps or stop
                or (budget is not None and time.perf_counter() - start >= budget))
        if (step % a.eval_every == 0 or done) and last_eval != step:
            last_eval = step
            val = evaluate_loss(model, valid, max(a.max_tokens, 512))
            secs = max(time.perf_counter() - window_t, 1e-9)
            line = {"step": step, "epoch": epoch,
                    "train_loss": window_loss / window_n if window_n else None,
                    "val_loss": val, "target_tokens_per_s": window_tokens / secs,
                    "elapsed_s": time.perf_counter() - start}
            with open(os.path.join(a.out, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")
            train_s = f"{line['train_loss']:.4f}" if window_n else "-"
            print(f"step {step:>6}  epoch {epoch:>3}  train {train_s:>6}  val {val:.4f}  "
                  f"{line['target_tokens_per_s']:>7.0f} target tokens/s  "
                  f"{line['elapsed_s']:>6.0f} s", flush=True)
            window_t, window_tokens, window_loss, window_n = time.perf_counter(), 0, 0.0, 0
        if done:
            break
        src, tgt_in, tgt_out, n_tokens = make_batch(train, batches[position])
        opt.zero_grad(set_to_none=True)
        logits = forward(model, src, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0,
                               label_smoothing=label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            raise SystemExit(f"the loss is {value} at step {step}")
        loss.backward()
        s = step + 1
        lr = a.lr_factor * d ** -0.5 * min(s ** -0.5, s * a.warmup ** -1.5)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        step, position = step + 1, position + 1
        if position == len(batches):
            epoch, position = epoch + 1, 0
            batches = epoch_batches(epoch)
        window_tokens, window_loss, window_n = (window_tokens + n_tokens, window_loss + value,
                                                window_n + 1)

    meta = {k: str(v) for k, v in cfg.items()}
    meta.update(bpe=bpe_json, data=f"{a.src} -> {a.tgt}", bos="1", eos="2", pad="0",
                trained_by="transformer/scripts/train_torch.py", step=str(step))
    path = os.path.join(a.out, "model.safetensors")
    save_file({n: v.contiguous() for n, v in model.state_dict().items()}, path, metadata=meta)
    print(f"saved {path} at step {step}", flush=True)
    if stop:
        sys.exit(130)


if __name__ == "__main__":
    main()
