"""PyTorch peer of `tessera rnn train`: the same model, data split, batching,
initialisation distribution, optimizer and evaluation, logging the same JSON lines.

    python rnn/scripts/charlm_torch.py --text ../shared/data/tinyshakespeare/input.txt \
        --cell elman --hidden 256 --steps 20000 --out torch-elman.jsonl

Data: the sorted characters of the text are the vocabulary; the first 90% of the text
trains, the last 10% validates. The training ids are cut into `batch` contiguous
streams read `seq` characters at a time (chunk k: steps k*seq .. (k+1)*seq, targets one
step later), the state carried from chunk to chunk and detached, reset after the last
chunk. Loss: mean cross-entropy per character; global grad-norm clip; Adam (PyTorch's
defaults otherwise). Validation: at most 64 streams of the validation ids, state carried,
mean nats per character.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Elman(nn.Module):
    """S_t = tanh(W S_{t-1} + U x_t + b_s), y_t = V S_t + b_y; U x_t a column lookup."""

    def __init__(self, vocab, hidden):
        super().__init__()
        k = 1.0 / math.sqrt(hidden)
        self.W = nn.Parameter(torch.empty(hidden, hidden).uniform_(-k, k))
        self.U = nn.Parameter(torch.empty(hidden, vocab).uniform_(-k, k))
        self.b_s = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.empty(vocab, hidden).uniform_(-k, k))
        self.b_y = nn.Parameter(torch.zeros(vocab))
        self.hidden = hidden

    def forward(self, x, s):  # x [B, T] ids, s [B, H] or None
        B, T = x.shape
        if s is None:
            s = x.new_zeros(B, self.hidden, dtype=torch.float32)
        ux = self.U.t()[x]  # [B, T, H]
        states = []
        for t in range(T):
            s = torch.tanh(s @ self.W.t() + ux[:, t] + self.b_s)
            states.append(s)
        h = torch.stack(states, 1)
        return h @ self.V.t() + self.b_y, s


class Stack(nn.Module):
    def __init__(self, cell, vocab, hidden, layers):
        super().__init__()
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = kind(vocab, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)
        self.vocab = vocab

    def forward(self, x, s):
        h, s = self.rnn(F.one_hot(x, self.vocab).float(), s)
        return self.decoder(h), s


def detach(s):
    if s is None:
        return None
    if isinstance(s, tuple):
        return tuple(v.detach() for v in s)
    return s.detach()


def streams(ids, batch, seq):
    per = len(ids) // batch
    data = torch.tensor(ids[: per * batch]).view(batch, per)
    return data, (per - 1) // seq


def evaluate(model, ids, seq):
    batch = max(1, min(64, len(ids) // (seq + 1)))
    data, chunks = streams(ids, batch, seq)
    total, count, s = 0.0, 0, None
    with torch.no_grad():
        for k in range(chunks):
            x = data[:, k * seq : (k + 1) * seq]
            y = data[:, k * seq + 1 : (k + 1) * seq + 1]
            logits, s = model(x, s)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return total / count


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--text", required=True)
    p.add_argument("--cell", default="elman")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = open(a.text, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = [index[c] for c in text]
    cut = int(len(ids) * 0.9)
    train_ids, val_ids = ids[:cut], ids[cut:]
    model = Elman(len(chars), a.hidden) if a.cell == "elman" else Stack(a.cell, len(chars), a.hidden, a.layers)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    data, chunks = streams(train_ids, a.batch, a.seq)
    out = open(a.out, "w")
    start = time.perf_counter()
    window_t, window_n, window_loss = time.perf_counter(), 0, 0.0
    step, chunk, s = 0, 0, None
    while True:
        if step < a.steps:
            x = data[:, chunk * a.seq : (chunk + 1) * a.seq]
            y = data[:, chunk * a.seq + 1 : (chunk + 1) * a.seq + 1]
            opt.zero_grad(set_to_none=True)
            logits, s_next = model(x, s)
            loss = F.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            step += 1
            chunk += 1
            if chunk == chunks:
                chunk, s = 0, None
            else:
                s = detach(s_next)
            window_n += 1
            window_loss += loss.item()
        if step % a.eval_every == 0 or step >= a.steps:
            val = evaluate(model, val_ids, a.seq)
            secs = time.perf_counter() - window_t
            line = dict(
                step=step,
                train_loss=window_loss / window_n if window_n else float("nan"),
                val_loss=val,
                tokens_per_s=window_n * a.batch * a.seq / max(secs, 1e-9),
                elapsed_s=time.perf_counter() - start,
            )
            out.write(json.dumps(line) + "\n")
            out.flush()
            print(json.dumps(line), flush=True)
            window_t, window_n, window_loss = time.perf_counter(), 0, 0.0
        if step >= a.steps:
            break


if __name__ == "__main__":
    main()
