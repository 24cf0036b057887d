//! The encoder-decoder of "Attention Is All You Need" (Vaswani et al., 2017), in the
//! order of the paper's Figure 1: embeddings and positions (§3.4, §3.5), the encoder
//! layer and the decoder layer (§3.1, with attention §3.2 and the feed-forward network
//! §3.3), the two stacks, and the pre-softmax projection (§3.4).
//!
//! Every parameter is created once, by a [`VarBuilder`], at its PyTorch name: the model
//! is a module holding `embed` (`nn.Embedding`) and `transformer` (`nn.Transformer`), and
//! each struct below has the fields that `nn.Transformer` has. Decoding (greedy, beam
//! search, the key/value cache) is in `decode.rs`.

use std::sync::{Arc, Mutex, MutexGuard};

use tessera_autograd::Var;
use tessera_nn::{
    AttnMask, AttnNames, Embedding, Init, LayerNorm, Linear, Module, MultiHeadAttention, Params,
    RngState, VarBuilder, VarMap,
};
use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::config::{Positional, TransformerConfig};
use crate::{Error, Result};

/// The `eps` of every LayerNorm (PyTorch's default).
const NORM_EPS: f32 = 1e-5;

/// Dropout with probability `p` that draws from the model's one generator (saved with
/// training checkpoints, so that a resumed run draws the same masks). Every layer holds
/// a handle to the same generator.
#[derive(Clone, Debug)]
pub(crate) struct ModelDropout {
    p: f32,
    rng: Arc<Mutex<Rng>>,
}

impl ModelDropout {
    /// The generator, locked.
    fn rng(&self) -> MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `dropout(x)` in training, `x` otherwise.
    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        Ok(x.dropout(self.p, true, &mut self.rng())?)
    }
}

// ---------------------------------------------------------------------------------------
// Embeddings and positions (§3.4, §3.5)

/// The sinusoidal table `PE(pos, 2i) = sin(pos / 10000^(2i/d))`,
/// `PE(pos, 2i+1) = cos(pos / 10000^(2i/d))`, `[len, d]` ("Attention Is All You Need",
/// §3.5).
///
/// ```
/// let pe = tessera_transformer::sinusoidal_encoding(4, 6);
/// assert_eq!(pe.shape(), &[4, 6]);
/// assert_eq!(pe.to_vec()[..2], [0.0, 1.0]); // sin 0, cos 0
/// ```
pub fn sinusoidal_encoding(len: usize, d: usize) -> Tensor {
    let mut pe = vec![0.0f32; len * d];
    for pos in 0..len {
        for i in (0..d).step_by(2) {
            // The frequency as PyTorch's reference computes it: exp(2i · -ln(10000) / d).
            let freq = ((i as f32) * (-(10000f32).ln() / d as f32)).exp();
            let angle = pos as f32 * freq;
            pe[pos * d + i] = angle.sin();
            if i + 1 < d {
                pe[pos * d + i + 1] = angle.cos();
            }
        }
    }
    Tensor::from_vec(pe, &[len, d]).expect("len x d values")
}

/// The token tables ("Attention Is All You Need", §3.4: "we share the same weight matrix
/// between the two embedding layers and the pre-softmax linear transformation"), drawn
/// from `N(0, d_model^-1/2)`.
#[derive(Debug)]
pub(crate) enum Tokens {
    /// One table for source, target and the pre-softmax projection (`embed.weight`).
    Shared {
        /// `[vocab, d_model]`.
        embed: Embedding,
    },
    /// Separate vocabularies (`src_embed.weight`, `tgt_embed.weight`,
    /// `generator.weight`).
    Separate {
        /// `[src_vocab, d_model]`.
        src_embed: Embedding,
        /// `[tgt_vocab, d_model]`.
        tgt_embed: Embedding,
        /// The pre-softmax projection, `[tgt_vocab, d_model]`, no bias.
        generator: Linear,
    },
}

impl Tokens {
    fn new(vb: &VarBuilder, c: &TransformerConfig) -> tessera_nn::Result<Tokens> {
        let d = c.d_model;
        let init = Init::Normal {
            mean: 0.0,
            std: (d as f32).powf(-0.5),
        };
        let table = |name: &str, n: usize| -> tessera_nn::Result<Embedding> {
            Ok(Embedding {
                weight: vb.pp(name).param("weight", &[n, d], init.clone())?,
                padding_idx: None,
            })
        };
        Ok(if c.share_embeddings {
            Tokens::Shared {
                embed: table("embed", c.src_vocab)?,
            }
        } else {
            Tokens::Separate {
                src_embed: table("src_embed", c.src_vocab)?,
                tgt_embed: table("tgt_embed", c.tgt_vocab)?,
                generator: Linear::with_init(&vb.pp("generator"), d, c.tgt_vocab, init, None)?,
            }
        })
    }

    /// The source (`target` false) or target table.
    pub(crate) fn table(&self, target: bool) -> &Embedding {
        match self {
            Tokens::Shared { embed } => embed,
            Tokens::Separate { src_embed, .. } if !target => src_embed,
            Tokens::Separate { tgt_embed, .. } => tgt_embed,
        }
    }
}

/// How positions are added (§3.5; Table 3 row (E) compares the two).
#[derive(Debug)]
pub(crate) enum Positions {
    /// The fixed table of [`sinusoidal_encoding`], `[max_len, d_model]` (no parameter).
    Sinusoidal(Tensor),
    /// A learned table (`pos_embed.weight`, `[max_len, d_model]`, `N(0, d_model^-1/2)`).
    Learned {
        /// The table.
        pos_embed: Embedding,
    },
}

impl Positions {
    fn new(vb: &VarBuilder, c: &TransformerConfig) -> tessera_nn::Result<Positions> {
        Ok(match c.positional {
            Positional::Sinusoidal => {
                // Counted as a parameter would be: for a model built for a checkpoint,
                // the file's size bounds the table too.
                vb.reserve("sinusoid table", &[c.max_len, c.d_model])?;
                Positions::Sinusoidal(sinusoidal_encoding(c.max_len, c.d_model))
            }
            Positional::Learned => {
                let std = (c.d_model as f32).powf(-0.5);
                let init = Init::Normal { mean: 0.0, std };
                let weight = vb
                    .pp("pos_embed")
                    .param("weight", &[c.max_len, c.d_model], init)?;
                Positions::Learned {
                    pos_embed: Embedding {
                        weight,
                        padding_idx: None,
                    },
                }
            }
        })
    }

    /// Rows `offset .. offset + t`, `[t, d_model]`.
    fn rows(&self, offset: usize, t: usize) -> Result<Var> {
        Ok(match self {
            Positions::Sinusoidal(pe) => Var::constant(pe.narrow(0, offset, t)?),
            Positions::Learned { pos_embed } => pos_embed.weight.var().narrow(0, offset, t)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The sublayers (§3.2, §3.3) and their residual connections (§3.1, §5.4)

/// Multi-head attention ("Attention Is All You Need", §3.2.2) with dropout on its
/// probabilities after the softmax (as PyTorch's `nn.MultiheadAttention(dropout=P_drop)`).
/// Parameters as PyTorch's: `in_proj_weight`, `in_proj_bias`, `out_proj.weight`,
/// `out_proj.bias` (or `q_proj_weight`, `k_proj_weight`, `v_proj_weight` when
/// `h·d_k ≠ d_model`, Table 3 rows (A) and (B)).
///
/// Self-attention without dropout (evaluation, or `P_drop = 0`) runs on `tessera_nn`'s
/// packed kernel (one projection GEMM, heads read in place; see
/// [`MultiHeadAttention::forward_qkv`]), which `tessera-nn`'s tests check against the
/// plain composition `softmax(Q Kᵀ/√d_k) V` that every other call takes.
#[derive(Debug)]
pub(crate) struct Attention {
    pub(crate) mha: MultiHeadAttention,
    dropout: ModelDropout,
}

impl Attention {
    /// PyTorch's initialisation: Xavier-uniform projections, zero biases.
    fn new(
        vb: &VarBuilder,
        c: &TransformerConfig,
        dropout: &ModelDropout,
    ) -> tessera_nn::Result<Attention> {
        let (d, h) = (c.d_model, c.heads);
        let mha = if c.d_k * h == d && c.d_v * h == d {
            MultiHeadAttention::new(vb, d, h, AttnNames::Torch)?
        } else {
            MultiHeadAttention::with_head_dims(vb, d, h, c.d_k, c.d_v)?
        };
        Ok(Attention {
            mha,
            dropout: dropout.clone(),
        })
    }

    /// Attention of `q [B, Tq, d_model]` over `kv [B, Tk, d_model]`: `[B, Tq, d_model]`.
    fn forward(&self, q: &Var, kv: &Var, mask: Option<&AttnMask>, train: bool) -> Result<Var> {
        let p = self.dropout.p;
        if train && p > 0.0 {
            let mut rng = self.dropout.rng();
            let dropout = Some((p, &mut *rng));
            Ok(self.mha.forward_qkv(q, kv, kv, mask, dropout, false)?.0)
        } else {
            Ok(self.mha.forward_qkv(q, kv, kv, mask, None, false)?.0)
        }
    }
}

/// The position-wise feed-forward network ("Attention Is All You Need", §3.3):
/// `FFN(x) = max(0, x W₁ + b₁) W₂ + b₂`, with dropout after the ReLU (as PyTorch's
/// `nn.TransformerEncoderLayer`). PyTorch keeps `linear1` and `linear2` directly in the
/// layer, so this one is built at the layer's own path.
///
/// # Shapes
/// `[..., d_model] -> [..., d_model]`.
#[derive(Debug)]
pub(crate) struct FeedForward {
    linear1: Linear,
    linear2: Linear,
    dropout: ModelDropout,
}

impl FeedForward {
    /// PyTorch's `nn.Linear` initialisation.
    fn new(
        vb: &VarBuilder,
        c: &TransformerConfig,
        dropout: &ModelDropout,
    ) -> tessera_nn::Result<FeedForward> {
        Ok(FeedForward {
            linear1: Linear::new(&vb.pp("linear1"), c.d_model, c.d_ff, true)?,
            linear2: Linear::new(&vb.pp("linear2"), c.d_ff, c.d_model, true)?,
            dropout: dropout.clone(),
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Var) -> tessera_nn::Result<Var> {
        self.forward_t(x, false)
    }

    fn forward_t(&self, x: &Var, train: bool) -> tessera_nn::Result<Var> {
        let h = self.linear1.forward(x)?.relu();
        let h = if train && self.dropout.p > 0.0 {
            h.dropout(self.dropout.p, true, &mut self.dropout.rng())?
        } else {
            h
        };
        self.linear2.forward(&h)
    }
}

/// The residual connection around each sublayer (§3.1): `LayerNorm(x + Dropout(f(x)))`
/// (post-norm, the paper's), or `x + Dropout(f(LayerNorm(x)))` with `norm_first`.
#[derive(Clone, Debug)]
pub(crate) struct Residual {
    norm_first: bool,
    dropout: ModelDropout,
}

impl Residual {
    pub(crate) fn forward(
        &self,
        x: &Var,
        norm: &LayerNorm,
        train: bool,
        f: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Var> {
        if self.norm_first {
            let y = f(&norm.forward(x)?)?;
            Ok(x.add(&self.dropout.forward_t(&y, train)?)?)
        } else {
            let y = f(x)?;
            Ok(norm.forward(&x.add(&self.dropout.forward_t(&y, train)?)?)?)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The encoder layer and the decoder layer (§3.1, Figure 1)

/// One encoder layer ("Attention Is All You Need", §3.1 and Figure 1, left):
/// multi-head self-attention, then the feed-forward network, each inside a
/// [`Residual`]. PyTorch's `nn.TransformerEncoderLayer`: `self_attn`, `linear1`,
/// `linear2`, `norm1`, `norm2`.
#[derive(Debug)]
pub(crate) struct EncoderLayer {
    self_attn: Attention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    residual: Residual,
}

impl EncoderLayer {
    fn new(
        vb: &VarBuilder,
        c: &TransformerConfig,
        residual: &Residual,
    ) -> tessera_nn::Result<EncoderLayer> {
        let d = &residual.dropout;
        Ok(EncoderLayer {
            self_attn: Attention::new(&vb.pp("self_attn"), c, d)?,
            ff: FeedForward::new(vb, c, d)?,
            norm1: LayerNorm::new(&vb.pp("norm1"), c.d_model, NORM_EPS)?,
            norm2: LayerNorm::new(&vb.pp("norm2"), c.d_model, NORM_EPS)?,
            residual: residual.clone(),
        })
    }

    /// `[B, S, d_model] -> [B, S, d_model]`, the padding keys masked by `mask`.
    fn forward(&self, x: &Var, mask: Option<&AttnMask>, train: bool) -> Result<Var> {
        let r = &self.residual;
        let x = r.forward(x, &self.norm1, train, |h| {
            self.self_attn.forward(h, h, mask, train)
        })?;
        r.forward(&x, &self.norm2, train, |h| {
            Ok(self.ff.forward_t(h, train)?)
        })
    }
}

/// One decoder layer ("Attention Is All You Need", §3.1 and Figure 1, right): masked
/// multi-head self-attention, encoder-decoder attention (queries from the decoder, keys
/// and values from the encoder's output), then the feed-forward network, each inside a
/// [`Residual`]. PyTorch's `nn.TransformerDecoderLayer`: `self_attn`, `multihead_attn`,
/// `linear1`, `linear2`, `norm1`, `norm2`, `norm3`.
#[derive(Debug)]
pub(crate) struct DecoderLayer {
    pub(crate) self_attn: Attention,
    pub(crate) multihead_attn: Attention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
    residual: Residual,
}

impl DecoderLayer {
    fn new(
        vb: &VarBuilder,
        c: &TransformerConfig,
        residual: &Residual,
    ) -> tessera_nn::Result<DecoderLayer> {
        let d = &residual.dropout;
        Ok(DecoderLayer {
            self_attn: Attention::new(&vb.pp("self_attn"), c, d)?,
            multihead_attn: Attention::new(&vb.pp("multihead_attn"), c, d)?,
            ff: FeedForward::new(vb, c, d)?,
            norm1: LayerNorm::new(&vb.pp("norm1"), c.d_model, NORM_EPS)?,
            norm2: LayerNorm::new(&vb.pp("norm2"), c.d_model, NORM_EPS)?,
            norm3: LayerNorm::new(&vb.pp("norm3"), c.d_model, NORM_EPS)?,
            residual: residual.clone(),
        })
    }

    /// `[B, T, d_model] -> [B, T, d_model]` over `memory [B, S, d_model]`.
    fn forward(
        &self,
        x: &Var,
        memory: &Var,
        self_mask: Option<&AttnMask>,
        memory_mask: Option<&AttnMask>,
        train: bool,
    ) -> Result<Var> {
        self.sublayers(
            x,
            train,
            |h| self.self_attn.forward(h, h, self_mask, train),
            |h| self.multihead_attn.forward(h, memory, memory_mask, train),
        )
    }

    /// The three sublayers, with the two attentions given as `self_attn` and `cross`:
    /// the whole layer for full decoding here and for the cached steps of `decode.rs`.
    pub(crate) fn sublayers(
        &self,
        x: &Var,
        train: bool,
        self_attn: impl FnOnce(&Var) -> Result<Var>,
        cross: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Var> {
        let r = &self.residual;
        let x = r.forward(x, &self.norm1, train, self_attn)?;
        let x = r.forward(&x, &self.norm2, train, cross)?;
        r.forward(&x, &self.norm3, train, |h| {
            Ok(self.ff.forward_t(h, train)?)
        })
    }
}

// ---------------------------------------------------------------------------------------
// The stacks (§3.1)

/// `norm(x)` where the stack has a final norm.
fn final_norm(norm: &Option<LayerNorm>, x: Var) -> Result<Var> {
    match norm {
        Some(n) => Ok(n.forward(&x)?),
        None => Ok(x),
    }
}

/// The encoder ("Attention Is All You Need", §3.1: "a stack of N = 6 identical layers"),
/// with `nn.TransformerEncoder`'s optional final `norm`. Parameters `layers.{i}.*`,
/// `norm.*`.
#[derive(Debug)]
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
    norm: Option<LayerNorm>,
}

/// The decoder ("Attention Is All You Need", §3.1), with `nn.TransformerDecoder`'s
/// optional final `norm`. Parameters `layers.{i}.*`, `norm.*`.
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) layers: Vec<DecoderLayer>,
    pub(crate) norm: Option<LayerNorm>,
}

/// PyTorch's `nn.Transformer`: the two stacks (parameters `encoder.*`, `decoder.*`).
#[derive(Debug)]
pub(crate) struct EncoderDecoder {
    encoder: Encoder,
    pub(crate) decoder: Decoder,
}

impl EncoderDecoder {
    fn new(
        vb: &VarBuilder,
        c: &TransformerConfig,
        residual: &Residual,
    ) -> tessera_nn::Result<EncoderDecoder> {
        let norm = |vb: &VarBuilder| -> tessera_nn::Result<Option<LayerNorm>> {
            c.final_norms
                .then(|| LayerNorm::new(&vb.pp("norm"), c.d_model, NORM_EPS))
                .transpose()
        };
        let (enc, dec) = (vb.pp("encoder"), vb.pp("decoder"));
        let encoder = Encoder {
            layers: (0..c.encoder_layers)
                .map(|i| EncoderLayer::new(&enc.pp("layers").pp(i), c, residual))
                .collect::<tessera_nn::Result<_>>()?,
            norm: norm(&enc)?,
        };
        let decoder = Decoder {
            layers: (0..c.decoder_layers)
                .map(|i| DecoderLayer::new(&dec.pp("layers").pp(i), c, residual))
                .collect::<tessera_nn::Result<_>>()?,
            norm: norm(&dec)?,
        };
        Ok(EncoderDecoder { encoder, decoder })
    }
}

// ---------------------------------------------------------------------------------------
// The model

/// The Transformer of "Attention Is All You Need" (Vaswani et al., 2017; see the [crate
/// documentation](crate)): embeddings and positions, the encoder and decoder stacks and
/// the pre-softmax projection of the paper's Figure 1.
///
/// Parameter names are those of a PyTorch module holding `embed` (`nn.Embedding`, shared
/// by source, target and the pre-softmax projection) and `transformer`
/// (`nn.Transformer`): `embed.weight`,
/// `transformer.encoder.layers.0.self_attn.in_proj_weight`, ...,
/// `transformer.decoder.layers.5.multihead_attn.out_proj.bias`, and with
/// [`TransformerConfig::final_norms`] `transformer.encoder.norm.weight`, ... Unshared
/// vocabularies use `src_embed.weight`, `tgt_embed.weight` and `generator.weight`;
/// learned positions `pos_embed.weight`.
///
/// ```
/// use tessera_nn::Params;
/// use tessera_tensor::Rng;
/// use tessera_transformer::{Transformer, TransformerConfig};
/// let model = Transformer::new(TransformerConfig::small(20, 16, 2, 32, 1), &mut Rng::seed(0))?;
/// let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[0], "embed.weight");
/// assert_eq!(names[1], "transformer.encoder.layers.0.self_attn.in_proj_weight");
/// assert_eq!(names.len(), 1 + 12 + 18); // embed, encoder layer, decoder layer
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
#[derive(Debug)]
pub struct Transformer {
    config: TransformerConfig,
    vars: VarMap,
    pub(crate) tokens: Tokens,
    positions: Positions,
    pub(crate) transformer: EncoderDecoder,
    /// The one dropout generator (the embedding sums' dropout; the layers hold handles
    /// to the same generator).
    dropout: ModelDropout,
}

/// Source and target padding for [`Transformer::forward`]: the id that marks padding.
pub type PadId = Option<usize>;

impl Transformer {
    /// A model with `torch_bench.py`'s initialisation, drawn from `rng`: embeddings
    /// `N(0, d_model^-1/2)`, attention Xavier-uniform, linear layers PyTorch's default,
    /// LayerNorm `γ = 1, β = 0`. The dropout generator is seeded from `rng` after that.
    pub fn new(config: TransformerConfig, rng: &mut Rng) -> Result<Transformer> {
        config.validate()?;
        let vars = VarMap::new();
        let model = VarBuilder::with_rng(&vars, rng, |vb| Transformer::build_valid(vb, config))?;
        model.set_rng_state(RngState::of(&Rng::seed(rng.below(1 << 30) as u64)));
        Ok(model)
    }

    /// A model whose parameters `vb` creates (at its path, normally the root of its
    /// [`VarMap`]): with [`VarBuilder::zeros`] nothing is drawn, for a model whose values
    /// are loaded next ([`VarMap::load`]). The dropout generator starts as
    /// `Rng::seed(0)` ([`Transformer::set_rng_state`] sets it).
    ///
    /// ```
    /// use tessera_nn::{Params, VarBuilder, VarMap};
    /// use tessera_transformer::{Transformer, TransformerConfig};
    /// let vars = VarMap::new();
    /// let config = TransformerConfig::small(20, 16, 2, 32, 1);
    /// let model = Transformer::build(&VarBuilder::zeros(&vars), config)?;
    /// assert_eq!(vars.num_parameters(), config.num_parameters());
    /// assert!(model.named_parameters().iter().all(|(_, p)| p.value().to_vec().iter().all(|&v| v == 0.0)));
    /// # Ok::<(), tessera_transformer::Error>(())
    /// ```
    pub fn build(vb: &VarBuilder, config: TransformerConfig) -> Result<Transformer> {
        config.validate()?;
        Ok(Transformer::build_valid(vb, config)?)
    }

    /// [`Transformer::build`] of a validated configuration, in the order of the names.
    fn build_valid(vb: &VarBuilder, config: TransformerConfig) -> tessera_nn::Result<Transformer> {
        let dropout = ModelDropout {
            p: config.dropout,
            rng: Arc::new(Mutex::new(Rng::seed(0))),
        };
        let residual = Residual {
            norm_first: config.norm_first,
            dropout: dropout.clone(),
        };
        Ok(Transformer {
            tokens: Tokens::new(vb, &config)?,
            positions: Positions::new(vb, &config)?,
            transformer: EncoderDecoder::new(&vb.pp("transformer"), &config, &residual)?,
            config,
            vars: vb.vars().clone(),
            dropout,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The state of the dropout generator, for checkpoints.
    pub fn rng_state(&self) -> RngState {
        RngState::of(&self.dropout.rng())
    }

    /// Restores the dropout generator saved by [`Transformer::rng_state`].
    pub fn set_rng_state(&self, state: RngState) {
        *self.dropout.rng() = state.rng();
    }

    /// `dropout(E[ids] · √d_model + PE[offset .. offset + T])`, `[B, T] -> [B, T,
    /// d_model]`, from the source (`target` false) or target table.
    pub(crate) fn embed(
        &self,
        ids: &IndexTensor,
        target: bool,
        offset: usize,
        train: bool,
    ) -> Result<Var> {
        const OP: &str = "Transformer";
        let &[_, t] = ids.shape() else {
            return Err(Error::shape(OP, "token ids [B, T]", ids.shape()));
        };
        let c = &self.config;
        if offset + t > c.max_len {
            let expected = format!("positions up to max_len {}", c.max_len);
            return Err(Error::setting(OP, "sequence length", offset + t, expected));
        }
        let vocab = if target { c.tgt_vocab } else { c.src_vocab };
        if let Some(&bad) = ids.data().iter().find(|&&i| i >= vocab) {
            let expected = format!("below the vocabulary of {vocab}");
            return Err(Error::setting(OP, "token id", bad, expected));
        }
        let x = self
            .tokens
            .table(target)
            .forward_ids(ids)?
            .mul_scalar((c.d_model as f32).sqrt()); // [B, T, d]
        let x = x.add(&self.positions.rows(offset, t)?)?; // + [T, d]
        self.dropout.forward_t(&x, train)
    }

    /// `[B, 1, 1, T]` keep-mask of the non-padding keys, when padding is used.
    pub(crate) fn key_mask(ids: &IndexTensor, pad: PadId) -> Result<Option<AttnMask>> {
        let Some(pad) = pad else { return Ok(None) };
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let keep: Vec<f32> = ids
            .data()
            .iter()
            .map(|&i| (i != pad) as u8 as f32)
            .collect();
        Ok(Some(AttnMask::Keep(Tensor::from_vec(keep, &[b, 1, 1, t])?)))
    }

    /// The encoder's output for source ids.
    ///
    /// # Shapes
    /// `src [B, S]` -> `[B, S, d_model]`.
    pub fn encode(&self, src: &IndexTensor, pad: PadId, train: bool) -> Result<Var> {
        let mask = Self::key_mask(src, pad)?;
        let encoder = &self.transformer.encoder;
        let mut x = self.embed(src, false, 0, train)?;
        for layer in &encoder.layers {
            x = layer.forward(&x, mask.as_ref(), train)?;
        }
        final_norm(&encoder.norm, x)
    }

    /// The decoder's output for target inputs (causally masked) over `memory` from
    /// [`Transformer::encode`] of `src` (whose padding is masked).
    ///
    /// # Shapes
    /// `tgt [B, T]`, `memory [B, S, d_model]`, `src [B, S]` -> `[B, T, d_model]`.
    pub fn decode_hidden(
        &self,
        tgt: &IndexTensor,
        memory: &Var,
        src: &IndexTensor,
        pad: PadId,
        train: bool,
    ) -> Result<Var> {
        let t = tgt.shape().get(1).copied().unwrap_or(0);
        let causal = AttnMask::causal(t);
        let self_mask = match (Self::key_mask(tgt, pad)?, causal) {
            (Some(AttnMask::Keep(keys)), AttnMask::Keep(c)) => AttnMask::Keep(keys.mul(&c)?),
            (_, causal) => causal,
        };
        let memory_mask = Self::key_mask(src, pad)?;
        let decoder = &self.transformer.decoder;
        let mut x = self.embed(tgt, true, 0, train)?;
        for layer in &decoder.layers {
            x = layer.forward(&x, memory, Some(&self_mask), memory_mask.as_ref(), train)?;
        }
        final_norm(&decoder.norm, x)
    }

    /// The pre-softmax projection ("Attention Is All You Need", §3.4): `h Eᵀ` with the
    /// shared embedding, or `h Gᵀ` with `generator.weight`.
    ///
    /// # Shapes
    /// `[..., d_model]` -> `[..., tgt_vocab]`.
    pub fn logits(&self, h: &Var) -> Result<Var> {
        Ok(match &self.tokens {
            Tokens::Separate { generator, .. } => generator.forward(h)?,
            Tokens::Shared { embed } => Linear {
                weight: embed.weight.clone(),
                bias: None,
            }
            .forward(h)?,
        })
    }

    /// The logits of every target position given the source and the target inputs
    /// (teacher forcing), in training (`train`: dropout on) or evaluation.
    ///
    /// # Shapes
    /// `src [B, S]`, `tgt_in [B, T]` -> `[B, T, tgt_vocab]`.
    pub fn forward(
        &self,
        src: &IndexTensor,
        tgt_in: &IndexTensor,
        pad: PadId,
        train: bool,
    ) -> Result<Var> {
        let memory = self.encode(src, pad, train)?;
        let h = self.decode_hidden(tgt_in, &memory, src, pad, train)?;
        self.logits(&h)
    }

    /// The label-smoothed cross-entropy (mean over the non-padding target tokens) of
    /// `tgt_out` given `src` and `tgt_in`: a scalar.
    ///
    /// # Shapes
    /// `src [B, S]`, `tgt_in [B, T]`, `tgt_out [B, T]` -> `[]`.
    pub fn loss(
        &self,
        src: &IndexTensor,
        tgt_in: &IndexTensor,
        tgt_out: &IndexTensor,
        pad: PadId,
        train: bool,
    ) -> Result<Var> {
        let logits = self.forward(src, tgt_in, pad, train)?;
        let (b, t, v) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
        if tgt_out.shape() != [b, t] {
            let expected = format!("targets [{b}, {t}]");
            return Err(Error::shape("Transformer::loss", expected, tgt_out.shape()));
        }
        let flat = IndexTensor::from_vec(tgt_out.data().to_vec());
        Ok(tessera_nn::cross_entropy(
            &logits.reshape(&[b * t, v])?, // [B·T, V]
            &flat,
            self.config.label_smoothing,
            pad,
        )?)
    }
}

impl Params for Transformer {
    fn vars(&self) -> &VarMap {
        &self.vars
    }
}
