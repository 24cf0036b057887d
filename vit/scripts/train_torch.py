#!/usr/bin/env python3
"""The PyTorch/timm peer of `tessera vit train`.

It trains timm's VisionTransformer with the recipe of `tessera vit train`
(cli/src/vit.rs `train`, `loaders`, `prepare`, `open_data`, `open_path`;
vit/src/train.rs `TrainConfig::lr_at`, `Trainer::step`, `no_decay`;
optim/src/schedule.rs `warmup_cosine`), with the same flags and defaults, so
that the two can be run side by side and their metrics.jsonl compared:

- data: an IDX folder (MNIST, Fashion-MNIST: train-images-idx3-ubyte,
  train-labels-idx1-ubyte, t10k-*; gzip or not, told by the magic bytes) or a
  CSV(.gz) of square grey images with the label last (pixels divided by 255, or
  by 16 when no value of the first 200 rows exceeds 16). The test set is --test
  (an IDX folder without train files gives its t10k files), else the IDX
  folder's t10k files, else 10% of --data held out. Pixels in [0, 1], resized
  (shorter side, bilinear, then a centre crop) when --image-size differs, then
  normalised to (x - 0.5) / 0.5.
- model: timm.models.vision_transformer.VisionTransformer (timm's default
  initialisation, LayerNorm eps 1e-6, qkv bias), class token or mean pooling.
- optimiser: AdamW (betas 0.9, 0.999, eps 1e-8), weight decay on the
  parameters of two or more dimensions except pos_embed and cls_token.
- schedule, set before every step s (1-based): linear warmup from lr/warmup
  over round(warmup_epochs * steps_per_epoch) steps, then cosine decay to
  lr/100 at epochs * steps_per_epoch.
- step: cross-entropy with label smoothing, backward, gradient-norm clipping
  (--clip 0: none), AdamW step.
- data order: a new permutation every epoch from (seed, epoch); batches of
  --batch, the last incomplete one dropped. Augmentation as tessera's order:
  normalise, then zero-pad by --crop-padding and crop at random, then flip
  horizontally with probability 1/2 (--flip). The random numbers differ from
  tessera's.
- after every epoch, and when --minutes or --max-steps stops the run: loss
  (unsmoothed) and accuracy on the test set in batches of max(batch, 256); one
  line printed and one JSON line appended to OUT/metrics.jsonl with step,
  epoch, train_loss, train_acc, test_loss, test_acc, lr, images_per_s and
  elapsed_s (seconds of training and evaluation since the start). The model is
  written to OUT/model.safetensors at the end (timm's parameter names).

Side by side with tessera, from the repository root:

    tessera vit train --data ../shared/data/fashion-mnist --minutes 20 \\
        --threads 2 --out runs/vit-tessera
    /work/venv/bin/python vit/scripts/train_torch.py \\
        --data ../shared/data/fashion-mnist --minutes 20 --threads 2 \\
        --out runs/vit-torch

Fine-tuning, as `tessera vit train --init-from`: --init-from FILE starts from
a timm state dict (this script's own model.safetensors, or tessera's, whose
names are timm's) of the shape the flags give; timm's checkpoint_filter_fn
resamples its position embedding to --image-size; a different number of
classes, or --reset-head, gets a new zero-initialised head; --freeze-backbone
trains the head alone (a linear probe). --per-class N keeps the first N
training images of each class, in file order, as tessera does.

A quick look: add --max-steps 5. It needs torch, timm and numpy (safetensors
to write the model); not torchvision.
"""

import argparse
import gzip
import json
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# Data


def read_bytes(path):
    """A file's bytes, gunzipped when it starts with gzip's magic bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def find(folder, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def read_idx(path):
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise SystemExit(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise SystemExit(f"{path}: {body.size} values for the shape {dims}")
    return body.reshape(dims)


def idx_pair(folder, prefix):
    """An IDX folder's train (or t10k) images [N, 1, H, W] in [0, 1] and labels, or None."""
    images = find(folder, f"{prefix}-images-idx3-ubyte")
    labels = find(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x = read_idx(images)
    y = read_idx(labels).astype(np.int64)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise SystemExit(f"{images}, {labels}: {x.shape} images and {y.shape} labels")
    if (y >= 10).any():
        raise SystemExit(f"{labels}: a label out of range for 10 classes")
    x = (x.astype(np.float32) / 255.0)[:, None, :, :]
    return x, y, 10


def read_csv(path):
    """Square grey images with the label last, [N, 1, S, S] in [0, 1], labels, classes."""
    text = read_bytes(path).decode("utf-8")
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: no rows")
    cols = len(rows[0].split(","))
    side = int(round(math.sqrt(max(cols - 1, 0))))
    if side == 0 or side * side + 1 != cols:
        raise SystemExit(
            f"{path}: expected rows of a square grey image and a label, "
            f"got {cols} columns in line 1"
        )
    values = np.array([[float(v) for v in r.split(",")] for r in rows], dtype=np.float32)
    if values.shape[1] != cols:
        raise SystemExit(f"{path}: rows of differing lengths")
    pixels, labels = values[:, :-1], values[:, -1].astype(np.int64)
    # Pixel range: 0..255, or 0..16 for scikit-learn's digits (judged on 200 rows).
    scale = 16.0 if pixels[:200].max() <= 16.0 else 255.0
    x = (pixels / scale).reshape(-1, 1, side, side).astype(np.float32)
    return x, labels, int(labels.max()) + 1


def open_path(path):
    """(train, test or None) from a path; each (images, labels, classes)."""
    if os.path.isdir(path):
        train, test = idx_pair(path, "train"), idx_pair(path, "t10k")
        if train is not None:
            return train, test
        if test is not None:
            return test, None
        raise SystemExit(f"{path}: no IDX files (image folders are not read by this script)")
    if not os.path.exists(path):
        raise SystemExit(f"{path}: no such file or folder")
    name = path.lower()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return read_csv(path), None
    raise SystemExit(f"{path}: expected an IDX folder or a .csv(.gz) file")


def open_data(args):
    train, test = open_path(args.data)
    if args.test is not None:
        test = open_path(args.test)[0]
    elif test is None:
        # 10% held out, as tessera's split (its permutation differs).
        x, y, k = train
        perm = np.random.default_rng([args.seed, 0x5EED]).permutation(len(x))
        n_train = int(len(x) * 0.9)
        train = (x[perm[:n_train]], y[perm[:n_train]], k)
        test = (x[perm[n_train:]], y[perm[n_train:]], k)
    if len(train[0]) == 0 or len(test[0]) == 0:
        raise SystemExit(f"{args.data}: an empty training or test set")
    if train[0].shape[1:] != test[0].shape[1:] or train[2] != test[2]:
        raise SystemExit(
            f"the training images {list(train[0].shape[1:])} ({train[2]} classes) and the "
            f"test images {list(test[0].shape[1:])} ({test[2]} classes) differ"
        )
    return train, test


def prepare(x, size):
    """Resize (shorter side, bilinear, centre crop) when needed, then (x - 0.5) / 0.5."""
    _, _, h, w = x.shape
    if h != size or w != size:
        t = torch.from_numpy(x)
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = t[:, :, top : top + size, left : left + size].contiguous().numpy()
    return ((x - 0.5) / 0.5).astype(np.float32)


def augment(x, crop, flip, rng):
    """Zero padding and a random crop, then random horizontal flips, of normalised images."""
    n, c, h, w = x.shape
    if crop > 0:
        padded = np.zeros((n, c, h + 2 * crop, w + 2 * crop), dtype=x.dtype)
        padded[:, :, crop : crop + h, crop : crop + w] = x
        tops = rng.integers(0, 2 * crop + 1, size=n)
        lefts = rng.integers(0, 2 * crop + 1, size=n)
        x = np.stack([padded[i, :, t : t + h, l : l + w] for i, (t, l) in enumerate(zip(tops, lefts))])
    if flip:
        mask = rng.integers(0, 2, size=n) == 1
        x = x.copy()
        x[mask] = x[mask][..., ::-1]
    return x


# ----------------------------------------------------------------------------
# Recipe


def lr_at(step, lr, min_lr, warmup_steps, total_steps):
    """TrainConfig::lr_at: schedule::warmup_cosine at the 1-based step."""
    warmup = min(warmup_steps, total_steps)
    decay = max(total_steps - warmup, 0)
    start_factor = 1.0 / max(warmup, 1)
    k = max(step - 1, 0)
    if k < warmup:
        return lr * (start_factor + (1.0 - start_factor) * k / warmup)
    t = min(k - warmup, decay)
    return min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * t / max(decay, 1))) / 2.0


def param_groups(model, weight_decay):
    """Trainer's no_decay: no decay for 1-D parameters, pos_embed and cls_token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in ("pos_embed", "cls_token"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def evaluate(model, x, y, batch):
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch])
        yb = torch.from_numpy(y[i : i + batch])
        logits = model(xb)
        loss += F.cross_entropy(logits, yb).item() * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
    model.train()
    return loss / len(x), correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="an IDX folder or a CSV(.gz) file")
    p.add_argument("--test", help="test data (default: the IDX folder's t10k files, else 10%% of --data)")
    p.add_argument("--image-size", type=int, help="input size (default: the data's)")
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, help="MLP width (default 2*dim)")
    p.add_argument("--pool", default="token", choices=["token", "avg"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: none)")
    p.add_argument("--crop-padding", type=int, default=0)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--minutes", type=float, help="also stop after this many minutes")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", "-t", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", default="runs/vit-torch")
    p.add_argument("--init-from", help="start from this timm state dict (safetensors)")
    p.add_argument("--reset-head", action="store_true", help="a new zero head even for as many classes")
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    p.add_argument("--per-class", type=int, help="the first N training images of each class")
    args = p.parse_args()

    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.batch < 1 or args.epochs < 1:
        raise SystemExit("--batch and --epochs must be at least 1")
    import timm
    from timm.models.vision_transformer import VisionTransformer

    os.makedirs(args.out, exist_ok=True)
    metrics_path = os.path.join(args.out, "metrics.jsonl")

    (x_train, y_train, classes), (x_test, y_test, _) = open_data(args)
    if args.per_class is not None:
        keep, seen_per = [], {}
        for i, label in enumerate(y_train):
            if seen_per.get(int(label), 0) < args.per_class:
                seen_per[int(label)] = seen_per.get(int(label), 0) + 1
                keep.append(i)
        x_train, y_train = x_train[keep], y_train[keep]
    channels, h, w = x_train.shape[1:]
    size = args.image_size or min(h, w)
    print(
        f"{args.data}: {len(x_train)} training images, {len(x_test)} test images, "
        f"{classes} classes, {[channels, h, w]}",
        flush=True,
    )
    x_train, x_test = prepare(x_train, size), prepare(x_test, size)

    torch.manual_seed(args.seed)
    mlp = args.mlp if args.mlp is not None else 2 * args.dim
    model = VisionTransformer(
        img_size=size,
        patch_size=args.patch,
        in_chans=channels,
        num_classes=classes,
        embed_dim=args.dim,
        depth=args.depth,
        num_heads=args.heads,
        mlp_ratio=mlp / args.dim,
        qkv_bias=True,
        class_token=args.pool == "token",
        global_pool=args.pool,
    )
    if args.init_from is not None:
        from safetensors.torch import load_file
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(load_file(args.init_from), model)
        new_head = args.reset_head or state["head.weight"].shape[0] != classes
        if new_head:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - ({"head.weight", "head.bias"} if new_head else set()):
            raise SystemExit(f"{args.init_from}: missing {missing}, unexpected {unexpected}")
        if new_head:
            with torch.no_grad():
                model.head.weight.zero_()
                model.head.bias.zero_()
        print(f"from {args.init_from}" + (", new zero head" if new_head else ""), flush=True)
    if args.freeze_backbone:
        for name, q in model.named_parameters():
            q.requires_grad_(name.startswith("head."))
    model.train()
    per_epoch = len(x_train) // args.batch
    if per_epoch == 0:
        raise SystemExit(f"--batch {args.batch} is larger than the {len(x_train)} training images")
    warmup_steps = int(round(args.warmup_epochs * per_epoch))
    total_steps = args.epochs * per_epoch
    min_lr = args.lr / 100.0
    total = min(total_steps, args.max_steps) if args.max_steps is not None else total_steps
    n_params = sum(p.numel() for p in model.parameters())
    tokens = (size // args.patch) ** 2 + (1 if args.pool == "token" else 0)
    print(
        f"ViT {size}x{size} patch {args.patch} ({tokens} tokens), D {args.dim}, depth {args.depth}, "
        f"heads {args.heads}, MLP {mlp}: {n_params} parameters; {per_epoch} steps of "
        f"{args.batch} images per epoch; warmup {warmup_steps} of {total_steps} steps",
        flush=True,
    )
    print(
        f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    opt = torch.optim.AdamW(
        param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999), eps=1e-8
    )
    params = [q for q in model.parameters() if q.requires_grad]
    test_batch = max(args.batch, 256)

    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))

    start = time.perf_counter()
    budget = args.minutes * 60.0 if args.minutes is not None else None
    loss_sum, correct, seen, steps_in_window = 0.0, 0, 0, 0
    window = time.perf_counter()
    stop_reason = None
    step = 0
    while step < total and stop_reason is None:
        epoch = step // per_epoch
        perm = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
        aug_rng = np.random.default_rng([args.seed, epoch, 1])
        for b in range(step % per_epoch, per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            xb = x_train[idx]
            if args.crop_padding > 0 or args.flip:
                xb = augment(xb, args.crop_padding, args.flip, aug_rng)
            xb = torch.from_numpy(np.ascontiguousarray(xb))
            yb = torch.from_numpy(y_train[idx])

            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=args.label_smoothing)
            value = loss.item()
            if not math.isfinite(value):
                raise SystemExit(f"the loss is {value} at step {step + 1}")
            correct += (logits.argmax(1) == yb).sum().item()
            loss.backward()
            if args.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, args.clip)
            lr = lr_at(step + 1, args.lr, min_lr, warmup_steps, total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            step += 1
            loss_sum += value
            seen += len(yb)
            steps_in_window += 1

            if interrupted:
                stop_reason = "interrupted"
            elif budget is not None and time.perf_counter() - start >= budget:
                stop_reason = "time limit"
            if step % per_epoch == 0 or step >= total or stop_reason is not None:
                secs = max(time.perf_counter() - window, 1e-9)
                test_loss, test_acc = evaluate(model, x_test, y_test, test_batch)
                line = {
                    "step": step,
                    "epoch": step / per_epoch,
                    "train_loss": loss_sum / max(steps_in_window, 1),
                    "train_acc": correct / max(seen, 1),
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "lr": lr,
                    "images_per_s": seen / secs,
                    "elapsed_s": time.perf_counter() - start,
                }
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(line) + "\n")
                print(
                    f"epoch {step / per_epoch:>6.2f}  step {step:>6}  "
                    f"train loss {line['train_loss']:.4f} acc {100 * line['train_acc']:5.2f}%  "
                    f"test loss {test_loss:.4f} acc {100 * test_acc:5.2f}%  "
                    f"{seen / secs:>5.0f} img/s  {line['elapsed_s']:>6.0f} s",
                    flush=True,
                )
                loss_sum, correct, seen, steps_in_window = 0.0, 0, 0, 0
                window = time.perf_counter()
            if stop_reason is not None or step >= total:
                break

    model_path = os.path.join(args.out, "model.safetensors")
    try:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, model_path)
        wrote = f"{model_path} and {metrics_path}"
    except ImportError:
        wrote = metrics_path
    print(f"{stop_reason or 'done'} at step {step}: wrote {wrote}", flush=True)
    if stop_reason == "interrupted":
        sys.exit(130)


if __name__ == "__main__":
    main()
