"""Writes the three checkpoints of the earlier metadata layout that the model crates must
refuse with a clear message (each setting as its own metadata string, the step counter
and the data position as f32 halves `[v >> 20, v & 0xFFFFF]` in `train.*` tensors,
before checkpoints held one JSON `config` and one `train_state` entry):

- `rnn/tests/fixtures/legacy_charlm.safetensors`: `TrainState::save` of an Elman network
  with a vocabulary of 1 and a state of 1 at step 0, as `tessera rnn train` wrote it
  (with `vocab` and `text`);
- `transformer/tests/fixtures/legacy_checkpoint.safetensors`: the keys of
  `TransformerConfig::to_metadata` and `Trainer::save`, with only the `train.step`
  tensor (step 1234);
- `vit/tests/fixtures/legacy_checkpoint.safetensors`: a tiny model (4x4 grey images,
  patch 2, D 2, depth 1, 1 head, MLP 4, 2 classes) with its Adam moments, at step 3.

Every tensor is small, so the files stay tiny. Python's standard library only; run from
the repository root:
    python3 testutil/scripts/make_legacy_checkpoints.py
"""

import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_safetensors(path, metadata, tensors):
    """A safetensors file: an 8-byte little-endian header length, a JSON header
    (`__metadata__` and one entry per tensor, padded with spaces to 8 bytes) and the
    raw f32 data. `tensors` is a list of (name, shape, values) in file order."""
    header = {"__metadata__": metadata}
    data = b""
    for name, shape, values in tensors:
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(ROOT, path), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    print(path, os.path.getsize(os.path.join(ROOT, path)), "bytes")


def halves(v):
    """A counter as the two f32 halves of the earlier layout."""
    return [float(v >> 20), float(v & 0xFFFFF)]


def rnn():
    metadata = {
        # CharLmConfig::to_metadata
        "model": "tessera-rnn/charlm",
        "cell": "elman",
        "vocab_size": "1",
        "hidden": "1",
        "layers": "1",
        # TrainState::save
        "batch": "8",
        "seq": "32",
        "lr": "0.002",
        "clip": "5",
        # tessera rnn train
        "vocab": "a",
        "text": "built-in sonnets",
    }
    tensors = [
        ("U", [1, 1], [0.25]),
        ("V", [1, 1], [-0.5]),
        ("W", [1, 1], [0.75]),
        ("b_s", [1], [0.0]),
        ("b_y", [1], [0.0]),
        ("train.chunk", [2], halves(0)),
        ("train.step", [2], halves(0)),
    ]
    write_safetensors("rnn/tests/fixtures/legacy_charlm.safetensors", metadata, tensors)


def transformer():
    settings = [
        ("model", "tessera-transformer"),
        ("src_vocab", "16"),
        ("tgt_vocab", "16"),
        ("share_embeddings", "true"),
        ("d_model", "16"),
        ("heads", "2"),
        ("d_k", "8"),
        ("d_v", "8"),
        ("d_ff", "32"),
        ("encoder_layers", "1"),
        ("decoder_layers", "1"),
        ("dropout", "0.1"),
        ("label_smoothing", "0.1"),
        ("positional", "sinusoidal"),
        ("max_len", "16"),
        ("norm_first", "false"),
        ("final_norms", "false"),
        ("max_tokens", "120"),
        ("warmup", "20"),
        ("lr_factor", "1"),
        ("seed", "3"),
        ("bos", "1"),
        ("eos", "2"),
        ("pad", "0"),
    ]
    write_safetensors(
        "transformer/tests/fixtures/legacy_checkpoint.safetensors",
        dict(settings),
        [("train.step", [2], halves(1234))],
    )


def vit():
    d, mlp, classes, tokens, c, p = 2, 4, 2, 5, 1, 2

    def layer(name, out_dim, in_dims=()):
        """The weight ([out_dim, *in_dims]) and bias ([out_dim]) of a layer."""
        return {f"{name}.weight": [out_dim, *in_dims], f"{name}.bias": [out_dim]}

    params = {
        **layer("patch_embed.proj", d, [c, p, p]),
        "cls_token": [1, 1, d],
        "pos_embed": [1, tokens, d],
        **layer("blocks.0.norm1", d),
        **layer("blocks.0.attn.qkv", 3 * d, [d]),
        **layer("blocks.0.attn.proj", d, [d]),
        **layer("blocks.0.norm2", d),
        **layer("blocks.0.mlp.fc1", mlp, [d]),
        **layer("blocks.0.mlp.fc2", d, [mlp]),
        **layer("norm", d),
        **layer("head", classes, [d]),
    }
    shapes = {}
    for name, shape in params.items():
        shapes[name] = shape
        shapes[f"optim.{name}.step"] = []
        shapes[f"optim.{name}.exp_avg"] = shape
        shapes[f"optim.{name}.exp_avg_sq"] = shape
    shapes["train.step"] = [2]

    def values(name, n):
        if name == "train.step":
            return halves(3)
        if name.endswith(".step"):
            return [3.0]
        return [0.01 * ((i * 7 + len(name)) % 11 - 5) for i in range(n)]

    tensors = []
    for name in sorted(shapes):
        n = 1
        for s in shapes[name]:
            n *= s
        tensors.append((name, shapes[name], values(name, n)))
    # The keys of VitConfig::to_metadata and TrainConfig::to_metadata, and of the command.
    metadata = {
        "model": "tessera-vit",
        "image_size": "4",
        "patch_size": "2",
        "channels": "1",
        "embed_dim": "2",
        "depth": "1",
        "heads": "1",
        "mlp_dim": "4",
        "classes": "2",
        "pool": "token",
        "eps": "0.000001",
        "train.lr": "0.002",
        "train.min_lr": "0.00002",
        "train.weight_decay": "0.05",
        "train.warmup_steps": "1",
        "train.total_steps": "4",
        "train.label_smoothing": "0.1",
        "train.clip_norm": "1",
        "train.batch_size": "2",
        "train.seed": "0",
        "data.name": "built-in shapes",
        "normalize": "0.5",
    }
    write_safetensors("vit/tests/fixtures/legacy_checkpoint.safetensors", metadata, tensors)


if __name__ == "__main__":
    rnn()
    transformer()
    vit()
