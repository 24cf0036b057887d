//! The encoder-decoder of "Attention Is All You Need" (Vaswani et al., 2017), in the
//! order of the paper's Figure 1: embeddings and positions (§3.4, §3.5), the encoder
//! layer and the decoder layer (§3.1, with attention §3.2 and the feed-forward network
//! §3.3), the two stacks, and the pre-softmax projection (§3.4).
//!
//! Every parameter is created once, by a [`VarBuilder`], at its PyTorch name: the model
//! is a module holding `embed` (`nn.Embedding`) and `transformer`, which is
//! [`tessera_nn::Transformer`] (PyTorch's `nn.Transformer`: the layers, the stacks, the
//! residual connections and the masks are there). This file adds what the paper puts
//! around it: the token tables, the positions and the pre-softmax projection. Decoding
//! (greedy, beam search, the key/value cache) is in `decode.rs`.

use tessera_autograd::Var;
use tessera_nn::{
    AttnMask, Dropout, Embedding, EncoderIntermediates, Init, Linear, Module, Params, RngState,
    TransformerMasks, VarBuilder, VarMap,
};
use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::config::{Positional, TransformerConfig};
use crate::{Error, Result};

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
    pub(crate) transformer: tessera_nn::Transformer,
    /// The one dropout generator (the embedding sums' dropout; the layers hold handles
    /// to the same generator).
    dropout: Dropout,
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
        let tokens = Tokens::new(vb, &config)?;
        let positions = Positions::new(vb, &config)?;
        let dropout = Dropout::new(config.dropout, 0);
        let options = config.layer_options();
        let vb_t = vb.pp("transformer");
        let transformer = tessera_nn::Transformer {
            encoder: tessera_nn::TransformerEncoder::new(&vb_t.pp("encoder"), &options, &dropout)?,
            decoder: tessera_nn::TransformerDecoder::new(&vb_t.pp("decoder"), &options, &dropout)?,
        };
        Ok(Transformer {
            tokens,
            positions,
            transformer,
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
        Ok(self.dropout.forward_t(&x, train)?)
    }

    /// PyTorch's key padding mask of `ids` `[B, T]` (true where the id is `pad`), when
    /// padding is used.
    pub(crate) fn padding_mask(ids: &IndexTensor, pad: PadId) -> Result<Option<AttnMask>> {
        let Some(pad) = pad else { return Ok(None) };
        let padded: Vec<bool> = ids.data().iter().map(|&i| i == pad).collect();
        Ok(Some(AttnMask::from_bool(&padded, ids.shape())?))
    }

    /// The padding of `ids` as a mask over the scores of every query and head
    /// (`[B, 1, 1, S]`): what incremental decoding keeps for its steps.
    pub(crate) fn memory_mask(ids: &IndexTensor, pad: PadId) -> Result<Option<AttnMask>> {
        let (b, s) = (ids.shape()[0], ids.shape()[1]);
        let padding = Self::padding_mask(ids, pad)?;
        Ok(AttnMask::merge(None, padding.as_ref(), [b, 1, 1, s])?)
    }

    /// The encoder's output for source ids.
    ///
    /// # Shapes
    /// `src [B, S]` -> `[B, S, d_model]`.
    pub fn encode(&self, src: &IndexTensor, pad: PadId, train: bool) -> Result<Var> {
        Ok(self.encoder_pass(src, pad, train)?.output)
    }

    /// The encoder on the embedded source, its padding masked.
    fn encoder_pass(
        &self,
        src: &IndexTensor,
        pad: PadId,
        train: bool,
    ) -> Result<EncoderIntermediates> {
        let masks = TransformerMasks {
            src_key_padding_mask: Self::padding_mask(src, pad)?,
            ..TransformerMasks::default()
        };
        let x = self.embed(src, false, 0, train)?;
        let encoder = &self.transformer.encoder;
        Ok(encoder.forward_intermediates(&x, &masks, train)?)
    }

    /// Each encoder layer's output and the encoder's (after its final norm, when the
    /// configuration has one), in evaluation: what
    /// [`TransformerEncoder::forward_intermediates`](tessera_nn::TransformerEncoder::forward_intermediates)
    /// returns for the embedded source.
    ///
    /// ```
    /// use tessera_tensor::{IndexTensor, Rng};
    /// use tessera_transformer::{Transformer, TransformerConfig};
    /// let model = Transformer::new(TransformerConfig::small(20, 16, 2, 32, 2), &mut Rng::seed(0))?;
    /// let src = IndexTensor::new(vec![3, 4, 5, 0], &[1, 4])?;
    /// let all = model.encoder_intermediates(&src, Some(0))?;
    /// assert_eq!(all.layers.len(), 2);
    /// let memory = model.encode(&src, Some(0), false)?;
    /// assert_eq!(all.output.value().to_vec(), memory.value().to_vec());
    /// # Ok::<(), tessera_transformer::Error>(())
    /// ```
    ///
    /// # Shapes
    /// `src [B, S]` -> each `[B, S, d_model]`.
    pub fn encoder_intermediates(
        &self,
        src: &IndexTensor,
        pad: PadId,
    ) -> Result<EncoderIntermediates> {
        self.encoder_pass(src, pad, false)
    }

    /// The encoder-decoder inside the model: PyTorch's `nn.Transformer`, with its layers.
    pub fn layers(&self) -> &tessera_nn::Transformer {
        &self.transformer
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
        let masks = TransformerMasks {
            tgt_is_causal: true,
            tgt_key_padding_mask: Self::padding_mask(tgt, pad)?,
            memory_key_padding_mask: Self::padding_mask(src, pad)?,
            ..TransformerMasks::default()
        };
        let x = self.embed(tgt, true, 0, train)?;
        Ok(self
            .transformer
            .decoder
            .forward_masked(&x, memory, &masks, train)?)
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
