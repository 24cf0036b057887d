//! The model's shape, and the configurations of the paper's Table 3 as named presets.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How positions enter the model (Table 3 row (E) compares the two). Serialised as
/// `"sinusoidal"` or `"learned"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positional {
    /// `PE(pos, 2i) = sin(pos / 10000^(2i/d))`, `PE(pos, 2i+1) = cos(...)`: no parameters.
    Sinusoidal,
    /// A learned `[max_len, d_model]` table (parameter `pos_embed.weight`).
    Learned,
}

impl std::fmt::Display for Positional {
    /// `sinusoidal` or `learned`, as serialised and as `--positional` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Positional::Sinusoidal => "sinusoidal",
            Positional::Learned => "learned",
        })
    }
}

/// The shape and regularisation of a [`crate::Transformer`]: data, serialised as the
/// `model` part of a checkpoint's `config` entry ([`crate::CheckpointConfig`]).
///
/// ```
/// use tessera_transformer::TransformerConfig;
/// let c = TransformerConfig::base(37_000);
/// let json = serde_json::to_string(&c).unwrap();
/// assert!(json.contains(r#""d_model":512"#) && json.contains(r#""positional":"sinusoidal""#));
/// assert_eq!(serde_json::from_str::<TransformerConfig>(&json).unwrap(), c);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Source vocabulary.
    pub src_vocab: usize,
    /// Target vocabulary.
    pub tgt_vocab: usize,
    /// One embedding matrix for source, target and the pre-softmax projection (needs
    /// `src_vocab == tgt_vocab`); otherwise two embeddings and a separate projection.
    pub share_embeddings: bool,
    /// `d_model`.
    pub d_model: usize,
    /// `h`.
    pub heads: usize,
    /// Query/key width per head.
    pub d_k: usize,
    /// Value width per head.
    pub d_v: usize,
    /// Inner width of the position-wise feed-forward network.
    pub d_ff: usize,
    /// `N` of the encoder.
    pub encoder_layers: usize,
    /// `N` of the decoder.
    pub decoder_layers: usize,
    /// `P_drop`: on each sublayer output, on the embedding sums, inside the FFN and on
    /// the attention probabilities (as PyTorch's `nn.Transformer`).
    pub dropout: f32,
    /// `ε_ls`.
    pub label_smoothing: f32,
    /// Sinusoidal or learned positions.
    pub positional: Positional,
    /// Longest sequence (the learned table's size, the sinusoid table's length).
    pub max_len: usize,
    /// Pre-norm sublayers `x + Sublayer(LayerNorm(x))` instead of the paper's post-norm.
    pub norm_first: bool,
    /// A final LayerNorm after each stack (`nn.Transformer`'s `encoder.norm`,
    /// `decoder.norm`; the paper's post-norm model has none).
    pub final_norms: bool,
}

impl TransformerConfig {
    /// The arguments of the encoder-decoder inside the model
    /// ([`tessera_nn::Transformer`]): PyTorch's `nn.Transformer` options of this
    /// configuration (ReLU, `eps = 1e-5`).
    pub fn layer_options(&self) -> tessera_nn::TransformerOptions {
        tessera_nn::TransformerOptions {
            d_model: self.d_model,
            nhead: self.heads,
            num_encoder_layers: self.encoder_layers,
            num_decoder_layers: self.decoder_layers,
            dim_feedforward: self.d_ff,
            dropout: self.dropout,
            activation: tessera_nn::Activation::Relu,
            layer_norm_eps: 1e-5,
            norm_first: self.norm_first,
            final_norms: self.final_norms,
            head_dims: Some((self.d_k, self.d_v)),
        }
    }

    /// The paper's base model (Table 3, first row) with a shared vocabulary of `vocab`.
    pub fn base(vocab: usize) -> TransformerConfig {
        TransformerConfig {
            src_vocab: vocab,
            tgt_vocab: vocab,
            share_embeddings: true,
            d_model: 512,
            heads: 8,
            d_k: 64,
            d_v: 64,
            d_ff: 2048,
            encoder_layers: 6,
            decoder_layers: 6,
            dropout: 0.1,
            label_smoothing: 0.1,
            positional: Positional::Sinusoidal,
            max_len: 512,
            norm_first: false,
            final_norms: false,
        }
    }

    /// A configuration with `d_k = d_v = d_model / heads`.
    pub fn small(
        vocab: usize,
        d_model: usize,
        heads: usize,
        d_ff: usize,
        layers: usize,
    ) -> TransformerConfig {
        TransformerConfig {
            d_model,
            heads,
            d_k: d_model / heads.max(1),
            d_v: d_model / heads.max(1),
            d_ff,
            encoder_layers: layers,
            decoder_layers: layers,
            ..TransformerConfig::base(vocab)
        }
    }

    /// Checks the numbers against each other.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "TransformerConfig";
        let positive = [
            ("src_vocab", self.src_vocab),
            ("tgt_vocab", self.tgt_vocab),
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("d_k", self.d_k),
            ("d_v", self.d_v),
            ("d_ff", self.d_ff),
            ("max_len", self.max_len),
        ];
        if let Some(&(name, v)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::setting(OP, name, v, "must be positive"));
        }
        if self.share_embeddings && self.src_vocab != self.tgt_vocab {
            return Err(Error::setting(
                OP,
                "tgt_vocab",
                self.tgt_vocab,
                format!(
                    "shared embeddings need one vocabulary, and src_vocab is {}",
                    self.src_vocab
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::setting(OP, "dropout", self.dropout, "in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            let v = self.label_smoothing;
            return Err(Error::setting(OP, "label_smoothing", v, "in [0, 1]"));
        }
        Ok(())
    }

    /// The exact number of parameters of the model this configuration builds (biases on
    /// every projection, no bias on the pre-softmax projection).
    pub fn num_parameters(&self) -> usize {
        let d = self.d_model;
        let (qk, v) = (self.heads * self.d_k, self.heads * self.d_v);
        let attn = 2 * qk * d + v * d + 2 * qk + v + v * d + d;
        let ffn = 2 * d * self.d_ff + self.d_ff + d;
        let enc = attn + ffn + 2 * 2 * d;
        let dec = 2 * attn + ffn + 3 * 2 * d;
        let embeddings = if self.share_embeddings {
            self.src_vocab * d
        } else {
            self.src_vocab * d + 2 * self.tgt_vocab * d
        };
        let positions = match self.positional {
            Positional::Sinusoidal => 0,
            Positional::Learned => self.max_len * d,
        };
        let norms = if self.final_norms { 2 * 2 * d } else { 0 };
        embeddings + positions + self.encoder_layers * enc + self.decoder_layers * dec + norms
    }
}

/// A row of the paper's Table 3.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// `base`, `big`, `A1`..`A4`, `B1`, `B2`, `C1`..`C7`, `D1`..`D4`, `E`.
    pub name: &'static str,
    /// What the row changes, in the table's words.
    pub description: &'static str,
    /// The paper's parameter count in millions, where the table gives one.
    pub paper_millions: Option<u32>,
    build: fn(usize) -> TransformerConfig,
}

impl Preset {
    /// The configuration with a shared vocabulary of `vocab`.
    pub fn config(&self, vocab: usize) -> TransformerConfig {
        (self.build)(vocab)
    }
}

macro_rules! preset {
    ($name:expr, $desc:expr, $paper:expr, |$c:ident| $body:expr) => {
        Preset {
            name: $name,
            description: $desc,
            paper_millions: $paper,
            build: |vocab| {
                #[allow(unused_mut)]
                let mut $c = TransformerConfig::base(vocab);
                $body;
                $c
            },
        }
    };
}

/// Rows (A) and (C): `h` heads of `d_k = d_v = head` features.
fn heads(mut c: TransformerConfig, h: usize, head: usize) -> TransformerConfig {
    c.heads = h;
    c.d_k = head;
    c.d_v = head;
    c
}

/// Row (C): `n` encoder and `n` decoder layers.
fn layers(mut c: TransformerConfig, n: usize) -> TransformerConfig {
    c.encoder_layers = n;
    c.decoder_layers = n;
    c
}

/// Row (C): `d_model` with `d_k = d_v = head` (the base model's 8 heads).
fn width(c: TransformerConfig, d_model: usize, head: usize) -> TransformerConfig {
    let mut c = heads(c, c.heads, head);
    c.d_model = d_model;
    c
}

/// Every row of Table 3 ("Variations on the Transformer architecture"), in the table's
/// order. Unlisted values are those of the base model.
pub const PRESETS: &[Preset] = &[
    preset!(
        "base",
        "N=6, d_model=512, d_ff=2048, h=8, d_k=d_v=64, P_drop=0.1, ε_ls=0.1",
        Some(65),
        |c| c.positional = Positional::Sinusoidal
    ),
    preset!("A1", "(A) h=1, d_k=d_v=512", None, |c| c = heads(c, 1, 512)),
    preset!("A2", "(A) h=4, d_k=d_v=128", None, |c| c = heads(c, 4, 128)),
    preset!("A3", "(A) h=16, d_k=d_v=32", None, |c| c = heads(c, 16, 32)),
    preset!("A4", "(A) h=32, d_k=d_v=16", None, |c| c = heads(c, 32, 16)),
    preset!("B1", "(B) d_k=16", Some(58), |c| c.d_k = 16),
    preset!("B2", "(B) d_k=32", Some(60), |c| c.d_k = 32),
    preset!("C1", "(C) N=2", Some(36), |c| c = layers(c, 2)),
    preset!("C2", "(C) N=4", Some(50), |c| c = layers(c, 4)),
    preset!("C3", "(C) N=8", Some(80), |c| c = layers(c, 8)),
    preset!("C4", "(C) d_model=256, d_k=d_v=32", Some(28), |c| c =
        width(c, 256, 32)),
    preset!("C5", "(C) d_model=1024, d_k=d_v=128", Some(168), |c| c =
        width(c, 1024, 128)),
    preset!("C6", "(C) d_ff=1024", Some(53), |c| c.d_ff = 1024),
    preset!("C7", "(C) d_ff=4096", Some(90), |c| c.d_ff = 4096),
    preset!("D1", "(D) P_drop=0.0", None, |c| c.dropout = 0.0),
    preset!("D2", "(D) P_drop=0.2", None, |c| c.dropout = 0.2),
    preset!("D3", "(D) ε_ls=0.0", None, |c| c.label_smoothing = 0.0),
    preset!("D4", "(D) ε_ls=0.2", None, |c| c.label_smoothing = 0.2),
    preset!(
        "E",
        "(E) positional embedding instead of sinusoids",
        None,
        |c| c.positional = Positional::Learned
    ),
    preset!(
        "big",
        "N=6, d_model=1024, d_ff=4096, h=16, d_k=d_v=64, P_drop=0.3",
        Some(213),
        |c| {
            c = heads(c, 16, 64);
            c.d_model = 1024;
            c.d_ff = 4096;
            c.dropout = 0.3
        }
    ),
];

/// The preset named `name` (case-insensitive), or an error listing them all.
pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| Error::UnknownPreset {
            name: name.to_string(),
            known: PRESETS.iter().map(|p| p.name).collect(),
        })
}
