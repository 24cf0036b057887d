//! PyTorch's `nn.Transformer` and its parts ("Attention Is All You Need", §3.1): the
//! encoder layer, the decoder layer, the two stacks and the encoder-decoder, with
//! PyTorch's arguments, masks and state-dict names (`encoder.layers.0.self_attn.
//! in_proj_weight`, ..., `decoder.norm.bias`), so that a `torch.nn.Transformer` state
//! dict loads with no renaming. Inputs are dense and batch first: `[B, S, d_model]`,
//! `[B, T, d_model]` (PyTorch's `batch_first=True`).
//!
//! Padded positions keep their own vectors: only the masks hide them (PyTorch's
//! reference path; its nested-tensor fast path writes zeros there instead).

use crate::{
    Activation, AttnMask, AttnNames, Dropout, Error, Init, LayerNorm, Linear, Module,
    MultiHeadAttention, Result, Var, VarBuilder,
};

/// The constructor arguments of PyTorch's `nn.Transformer` (and of its layers), with
/// PyTorch's defaults ([`TransformerOptions::default`]: the paper's base model,
/// `d_model = 512`, 8 heads, 6 + 6 layers, `dim_feedforward = 2048`, dropout 0.1, ReLU,
/// `layer_norm_eps = 1e-5`, post-norm).
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerOptions {
    /// Width of the model.
    pub d_model: usize,
    /// Attention heads.
    pub nhead: usize,
    /// Encoder layers.
    pub num_encoder_layers: usize,
    /// Decoder layers.
    pub num_decoder_layers: usize,
    /// Inner width of the feed-forward networks.
    pub dim_feedforward: usize,
    /// Dropout after each sublayer, inside the feed-forward network and on the attention
    /// probabilities.
    pub dropout: f32,
    /// The feed-forward networks' activation: [`Activation::Relu`] or
    /// [`Activation::Gelu`] (PyTorch's two names).
    pub activation: Activation,
    /// The LayerNorms' `eps`.
    pub layer_norm_eps: f32,
    /// LayerNorm before each sublayer (`x + f(LN(x))`) rather than after
    /// (`LN(x + f(x))`, the paper's).
    pub norm_first: bool,
    /// The final LayerNorm of each stack (`encoder.norm`, `decoder.norm`), which
    /// `nn.Transformer` always has; without it the stacks are those of
    /// `nn.TransformerEncoder(layer, n)` with no `norm`.
    pub final_norms: bool,
    /// Query/key and value widths per head, `(d_k, d_v)`, when they differ from
    /// `d_model / nhead` (the paper's Table 3 rows (A) and (B)); the projections are
    /// then separate, under PyTorch's names `q_proj_weight`, `k_proj_weight`,
    /// `v_proj_weight`.
    pub head_dims: Option<(usize, usize)>,
}

impl Default for TransformerOptions {
    fn default() -> Self {
        TransformerOptions {
            d_model: 512,
            nhead: 8,
            num_encoder_layers: 6,
            num_decoder_layers: 6,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            norm_first: false,
            final_norms: true,
            head_dims: None,
        }
    }
}

impl TransformerOptions {
    /// Checks the options that PyTorch would refuse: heads that do not divide
    /// `d_model` (without `head_dims`), zero sizes, a dropout outside `[0, 1)`, an
    /// activation other than ReLU and GELU, a non-positive `eps`.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "Transformer";
        let setting =
            |name, value: String, expected: &str| Err(Error::setting(OP, name, value, expected));
        if self.d_model == 0 || self.dim_feedforward == 0 {
            let value = format!("{}, {}", self.d_model, self.dim_feedforward);
            return setting("d_model, dim_feedforward", value, "both positive");
        }
        match self.head_dims {
            None if self.nhead == 0 || !self.d_model.is_multiple_of(self.nhead) => {
                let expected = format!("a positive divisor of d_model {}", self.d_model);
                return setting("nhead", self.nhead.to_string(), &expected);
            }
            Some((k, v)) if self.nhead == 0 || k == 0 || v == 0 => {
                let value = format!("{}, {k}, {v}", self.nhead);
                return setting("nhead, d_k, d_v", value, "all positive");
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return setting("dropout", self.dropout.to_string(), "in [0, 1)");
        }
        if !matches!(self.activation, Activation::Relu | Activation::Gelu) {
            let value = format!("{:?}", self.activation);
            return setting("activation", value, "Relu or Gelu");
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return setting(
                "layer_norm_eps",
                self.layer_norm_eps.to_string(),
                "positive",
            );
        }
        Ok(())
    }
}

/// The masks of [`Transformer::forward_masked`] (and of the stacks and layers, which read
/// theirs), named and meant as PyTorch's: boolean masks ([`AttnMask::from_bool`]) are
/// true where attention is **not** allowed, float masks ([`AttnMask::Additive`]) are
/// added to the scores.
///
/// Shapes: `src_mask [S, S]` or `[B·H, S, S]`, `tgt_mask [T, T]` or `[B·H, T, T]`,
/// `memory_mask [T, S]` or `[B·H, T, S]`; the key padding masks `[B, S]`, `[B, T]`,
/// `[B, S]`.
#[derive(Clone, Debug, Default)]
pub struct TransformerMasks {
    /// The encoder's self-attention mask.
    pub src_mask: Option<AttnMask>,
    /// The decoder's self-attention mask.
    pub tgt_mask: Option<AttnMask>,
    /// The decoder's mask over the memory.
    pub memory_mask: Option<AttnMask>,
    /// Padding among the source positions.
    pub src_key_padding_mask: Option<AttnMask>,
    /// Padding among the target positions.
    pub tgt_key_padding_mask: Option<AttnMask>,
    /// Padding among the memory positions (normally the source padding).
    pub memory_key_padding_mask: Option<AttnMask>,
    /// The encoder's self-attention is causal: `src_mask` if given, else the causal
    /// mask built here.
    pub src_is_causal: bool,
    /// The decoder's self-attention is causal: `tgt_mask` if given, else
    /// [`Transformer::generate_square_subsequent_mask`] built here (PyTorch requires the
    /// mask with the hint).
    pub tgt_is_causal: bool,
}

/// `[B, T, d]` as `(B, T)`, or the error naming `what`.
fn batch_len(x: &Var, what: &str, d: usize) -> Result<(usize, usize)> {
    match x.shape() {
        &[b, t, w] if w == d => Ok((b, t)),
        got => Err(Error::shape(
            "Transformer",
            format!("{what} [B, T, {d}]"),
            got,
        )),
    }
}

/// How the layers' matrices are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Matrices {
    /// Each layer's own PyTorch initialisation, as `nn.TransformerEncoderLayer(...)`
    /// draws it alone.
    Layer,
    /// Xavier-uniform for every matrix, as `nn.Transformer._reset_parameters`.
    Xavier,
}

impl Matrices {
    /// The multi-head attention of `o` at `vb`.
    fn attention(self, vb: &VarBuilder, o: &TransformerOptions) -> Result<MultiHeadAttention> {
        let (d, h) = (o.d_model, o.nhead);
        match o.head_dims {
            Some((dk, dv)) if dk * h != d || dv * h != d => {
                // Separate projections are Xavier-uniform either way.
                MultiHeadAttention::with_head_dims(vb, d, h, dk, dv)
            }
            _ => {
                let xavier = Init::XavierUniform { gain: 1.0 };
                let out = match self {
                    Matrices::Layer => Init::default_bias(d),
                    Matrices::Xavier => xavier.clone(),
                };
                MultiHeadAttention::with_init(vb, d, h, AttnNames::Torch, xavier, out)
            }
        }
    }

    /// The linear layer `input -> output` at `vb`, with PyTorch's default bias.
    fn linear(self, vb: &VarBuilder, input: usize, output: usize) -> Result<Linear> {
        let weight = match self {
            Matrices::Layer => Init::KaimingUniform { a: 5f32.sqrt() },
            Matrices::Xavier => Init::XavierUniform { gain: 1.0 },
        };
        Linear::with_init(vb, input, output, weight, Some(Init::default_bias(input)))
    }
}

/// What builds the parts of one layer: its path, the options, how its matrices are
/// drawn and the generator of its dropout.
struct Parts<'a> {
    vb: VarBuilder,
    options: &'a TransformerOptions,
    init: Matrices,
    dropout: &'a Dropout,
}

impl<'a> Parts<'a> {
    fn new(
        vb: &VarBuilder,
        options: &'a TransformerOptions,
        init: Matrices,
        dropout: &'a Dropout,
    ) -> Self {
        Parts {
            vb: vb.clone(),
            options,
            init,
            dropout,
        }
    }

    /// The same parts one level down the path, at `name`.
    fn at(&self, name: impl ToString) -> Parts<'a> {
        Parts {
            vb: self.vb.pp(name),
            ..*self
        }
    }

    /// The multi-head attention at `name`.
    fn attention(&self, name: &str) -> Result<MultiHeadAttention> {
        self.init.attention(&self.vb.pp(name), self.options)
    }

    /// The linear layer `input -> output` at `name`.
    fn linear(&self, name: &str, input: usize, output: usize) -> Result<Linear> {
        self.init.linear(&self.vb.pp(name), input, output)
    }

    /// The LayerNorm over `d_model` at `name`.
    fn norm(&self, name: &str) -> Result<LayerNorm> {
        let o = self.options;
        LayerNorm::new(&self.vb.pp(name), o.d_model, o.layer_norm_eps)
    }

    /// The layer's dropout: the generator of the one given, `options.dropout` as the
    /// probability.
    fn dropout(&self) -> Dropout {
        self.dropout.with_p(self.options.dropout)
    }
}

/// Attention of `q` over `kv` (keys and values alike), with dropout on the
/// probabilities in training.
fn attention(
    mha: &MultiHeadAttention,
    q: &Var,
    kv: &Var,
    mask: Option<&AttnMask>,
    dropout: &Dropout,
    train: bool,
) -> Result<Var> {
    if train && dropout.p > 0.0 {
        let mut rng = dropout.rng();
        let dropout = Some((dropout.p, &mut *rng));
        Ok(mha.forward_qkv(q, kv, kv, mask, dropout, false)?.0)
    } else {
        Ok(mha.forward_qkv(q, kv, kv, mask, None, false)?.0)
    }
}

/// The position-wise feed-forward network of both layers (§3.3),
/// `linear2(dropout(activation(linear1(x))))`. Its parameters sit under the layer's own
/// path, as PyTorch names them: `linear1.*`, `linear2.*`.
///
/// # Shapes
/// `[.., d_model] -> [.., d_model]`.
///
/// ```
/// use tessera_nn::{Dropout, TransformerEncoderLayer, TransformerOptions, Var, VarMap};
/// use tessera_tensor::{Rng, Tensor};
/// let options = TransformerOptions { d_model: 2, nhead: 1, dim_feedforward: 2, ..Default::default() };
/// let (layer, _) = VarMap::build(&mut Rng::seed(0), |vb| {
///     TransformerEncoderLayer::new(vb, &options, &Dropout::new(0.0, 0))
/// })?;
/// let ff = &layer.feed_forward;
/// // linear1 = identity, linear2 = [[1, 1], [1, -1]] + [0.5, 0], ReLU between.
/// ff.linear1.weight.set(Tensor::from_vec(vec![1., 0., 0., 1.], &[2, 2])?)?;
/// ff.linear1.bias.as_ref().unwrap().set(Tensor::zeros(&[2]))?;
/// ff.linear2.weight.set(Tensor::from_vec(vec![1., 1., 1., -1.], &[2, 2])?)?;
/// ff.linear2.bias.as_ref().unwrap().set(Tensor::from_vec(vec![0.5, 0.], &[2])?)?;
/// let x = Var::constant(Tensor::from_vec(vec![3., -2.], &[1, 2])?);
/// // ReLU([3, -2]) = [3, 0]; then [3 + 0 + 0.5, 3 - 0].
/// assert_eq!(ff.forward_t(&x, &layer.dropout, false)?.value().to_vec(), [3.5, 3.0]);
/// # Ok::<(), tessera_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct FeedForward {
    /// `d_model -> dim_feedforward`.
    pub linear1: Linear,
    /// `dim_feedforward -> d_model`.
    pub linear2: Linear,
    /// The activation between the two.
    pub activation: Activation,
}

impl FeedForward {
    /// The network of the layer that `parts` builds.
    fn build(parts: &Parts<'_>) -> Result<Self> {
        let o = parts.options;
        Ok(FeedForward {
            linear1: parts.linear("linear1", o.d_model, o.dim_feedforward)?,
            linear2: parts.linear("linear2", o.dim_feedforward, o.d_model)?,
            activation: o.activation,
        })
    }

    /// The network on `x`, with `dropout` on the hidden activations in training.
    pub fn forward_t(&self, x: &Var, dropout: &Dropout, train: bool) -> Result<Var> {
        let h = self.activation.forward(&self.linear1.forward(x)?)?;
        self.linear2.forward(&dropout.forward_t(&h, train)?)
    }

    /// The last sublayer of both layers: the network with its residual and `norm`.
    fn sublayer(
        &self,
        norm_first: bool,
        norm: &LayerNorm,
        dropout: &Dropout,
        x: &Var,
        train: bool,
    ) -> Result<Var> {
        residual(norm_first, norm, dropout, x, train, |h| {
            self.forward_t(h, dropout, train)
        })
    }
}

/// The residual connection around one sublayer `f` (§3.1): `LN(x + dropout(f(x)))`, or
/// `x + dropout(f(LN(x)))` with `norm_first`.
fn residual(
    norm_first: bool,
    norm: &LayerNorm,
    dropout: &Dropout,
    x: &Var,
    train: bool,
    f: impl FnOnce(&Var) -> Result<Var>,
) -> Result<Var> {
    if norm_first {
        let y = f(&norm.forward(x)?)?;
        Ok(x.add(&dropout.forward_t(&y, train)?)?)
    } else {
        let y = f(x)?;
        norm.forward(&x.add(&dropout.forward_t(&y, train)?)?)
    }
}

// ---------------------------------------------------------------------------------------
// The layers

/// PyTorch's `nn.TransformerEncoderLayer` (batch first): self-attention, then the
/// feed-forward network, each inside a residual connection with LayerNorm. Parameters
/// `self_attn.in_proj_weight`, `self_attn.in_proj_bias`, `self_attn.out_proj.weight`,
/// `self_attn.out_proj.bias`, `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*`.
///
/// # Shapes
/// `[B, S, d_model] -> [B, S, d_model]`.
///
/// ```
/// use tessera_nn::{Dropout, Module, TransformerEncoderLayer, TransformerOptions, Var, VarMap};
/// use tessera_tensor::{Rng, Tensor};
/// let options = TransformerOptions { d_model: 8, nhead: 2, dim_feedforward: 16, ..Default::default() };
/// let (layer, vars) = VarMap::build(&mut Rng::seed(0), |vb| TransformerEncoderLayer::new(vb, &options, &Dropout::new(0.1, 0)))?;
/// let x = Var::constant(Tensor::randn(&[2, 5, 8], 0.0, 1.0, &mut Rng::seed(1)));
/// assert_eq!(layer.forward(&x)?.shape(), &[2, 5, 8]);
/// assert_eq!(vars.names()[0], "self_attn.in_proj_weight");
/// # Ok::<(), tessera_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TransformerEncoderLayer {
    /// Multi-head self-attention.
    pub self_attn: MultiHeadAttention,
    /// The feed-forward network (`linear1`, `linear2`).
    pub feed_forward: FeedForward,
    /// The LayerNorm of the attention sublayer.
    pub norm1: LayerNorm,
    /// The LayerNorm of the feed-forward sublayer.
    pub norm2: LayerNorm,
    /// Every dropout of the layer (PyTorch's `dropout`, `dropout1`, `dropout2` and the
    /// attention's), one generator.
    pub dropout: Dropout,
    /// Pre-norm rather than post-norm.
    pub norm_first: bool,
}

impl TransformerEncoderLayer {
    /// PyTorch's `nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
    /// activation, layer_norm_eps, batch_first=True, norm_first)` at `vb`, initialised
    /// as PyTorch initialises it alone, its dropout masks drawn from `dropout`'s
    /// generator (with `options.dropout` as the probability).
    pub fn new(vb: &VarBuilder, options: &TransformerOptions, dropout: &Dropout) -> Result<Self> {
        alone(vb, options, dropout)
    }

    /// PyTorch's `forward(src, src_mask, src_key_padding_mask, is_causal)`, in training
    /// (`train`: dropout on) or evaluation.
    pub fn forward_masked(
        &self,
        src: &Var,
        src_mask: Option<&AttnMask>,
        src_key_padding_mask: Option<&AttnMask>,
        is_causal: bool,
        train: bool,
    ) -> Result<Var> {
        let mask = self.mask_for(src, src_mask, is_causal, src_key_padding_mask)?;
        self.forward_merged(src, mask.as_ref(), train)
    }

    /// The one merged self-attention mask of the layer for `src`, whose shape it checks.
    fn mask_for(
        &self,
        src: &Var,
        mask: Option<&AttnMask>,
        causal: bool,
        padding: Option<&AttnMask>,
    ) -> Result<Option<AttnMask>> {
        let d = self.norm1.weight.value().numel();
        let (b, s) = batch_len(src, "src", d)?;
        AttnMask::merge_causal(mask, causal, padding, [b, self.self_attn.heads, s, s])
    }

    /// The layer with its one merged mask ([`AttnMask::merge`]).
    fn forward_merged(&self, x: &Var, mask: Option<&AttnMask>, train: bool) -> Result<Var> {
        let (norm_first, drop) = (self.norm_first, &self.dropout);
        let x = residual(norm_first, &self.norm1, drop, x, train, |h| {
            attention(&self.self_attn, h, h, mask, drop, train)
        })?;
        self.feed_forward
            .sublayer(norm_first, &self.norm2, drop, &x, train)
    }
}

impl Module for TransformerEncoderLayer {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_masked(x, None, None, false, false)
    }

    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        self.forward_masked(x, None, None, false, train)
    }
}

/// PyTorch's `nn.TransformerDecoderLayer` (batch first): masked self-attention,
/// attention over the encoder's memory, then the feed-forward network, each inside a
/// residual connection with LayerNorm. Parameters `self_attn.*`, `multihead_attn.*`,
/// `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*`, `norm3.*`.
///
/// # Shapes
/// `tgt [B, T, d_model]`, `memory [B, S, d_model]` -> `[B, T, d_model]`.
#[derive(Clone, Debug)]
pub struct TransformerDecoderLayer {
    /// Multi-head self-attention.
    pub self_attn: MultiHeadAttention,
    /// Multi-head attention over the memory (queries from the decoder).
    pub multihead_attn: MultiHeadAttention,
    /// The feed-forward network (`linear1`, `linear2`).
    pub feed_forward: FeedForward,
    /// The LayerNorm of the self-attention sublayer.
    pub norm1: LayerNorm,
    /// The LayerNorm of the memory-attention sublayer.
    pub norm2: LayerNorm,
    /// The LayerNorm of the feed-forward sublayer.
    pub norm3: LayerNorm,
    /// Every dropout of the layer, one generator.
    pub dropout: Dropout,
    /// Pre-norm rather than post-norm.
    pub norm_first: bool,
}

impl TransformerDecoderLayer {
    /// PyTorch's `nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout,
    /// activation, layer_norm_eps, batch_first=True, norm_first)` at `vb`, initialised
    /// as PyTorch initialises it alone, its dropout masks drawn from `dropout`'s
    /// generator (with `options.dropout` as the probability).
    pub fn new(vb: &VarBuilder, options: &TransformerOptions, dropout: &Dropout) -> Result<Self> {
        alone(vb, options, dropout)
    }

    /// PyTorch's `forward(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
    /// memory_key_padding_mask, tgt_is_causal)`, the masks taken from `masks`.
    pub fn forward_masked(
        &self,
        tgt: &Var,
        memory: &Var,
        masks: &TransformerMasks,
        train: bool,
    ) -> Result<Var> {
        let (self_mask, memory_mask) = self.masks_for(tgt, memory, masks)?;
        self.forward_merged(tgt, memory, self_mask.as_ref(), memory_mask.as_ref(), train)
    }

    /// The layer's merged self-attention and memory masks for `tgt` over `memory`, whose
    /// shapes it checks.
    fn masks_for(
        &self,
        tgt: &Var,
        memory: &Var,
        m: &TransformerMasks,
    ) -> Result<(Option<AttnMask>, Option<AttnMask>)> {
        let d = self.norm1.weight.value().numel();
        let (b, t) = batch_len(tgt, "tgt", d)?;
        let (_, s) = batch_len(memory, "memory", d)?;
        let h = self.self_attn.heads;
        let self_mask = AttnMask::merge_causal(
            m.tgt_mask.as_ref(),
            m.tgt_is_causal,
            m.tgt_key_padding_mask.as_ref(),
            [b, h, t, t],
        )?;
        let memory_padding = m.memory_key_padding_mask.as_ref();
        let memory_mask = AttnMask::merge(m.memory_mask.as_ref(), memory_padding, [b, h, t, s])?;
        Ok((self_mask, memory_mask))
    }

    /// The layer with its two merged masks.
    fn forward_merged(
        &self,
        x: &Var,
        memory: &Var,
        self_mask: Option<&AttnMask>,
        memory_mask: Option<&AttnMask>,
        train: bool,
    ) -> Result<Var> {
        let drop = &self.dropout;
        self.sublayers(
            x,
            train,
            |h| attention(&self.self_attn, h, h, self_mask, drop, train),
            |h| attention(&self.multihead_attn, h, memory, memory_mask, drop, train),
        )
    }

    /// The three sublayers with the two attentions supplied by the caller: `self_attn`
    /// and `cross` map the (normalised, with `norm_first`) input of their sublayer to
    /// its attention output. This is the layer that incremental decoding runs with keys
    /// and values from a cache.
    pub fn sublayers(
        &self,
        x: &Var,
        train: bool,
        self_attn: impl FnOnce(&Var) -> Result<Var>,
        cross: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Var> {
        let (norm_first, drop) = (self.norm_first, &self.dropout);
        let x = residual(norm_first, &self.norm1, drop, x, train, self_attn)?;
        let x = residual(norm_first, &self.norm2, drop, &x, train, cross)?;
        self.feed_forward
            .sublayer(norm_first, &self.norm3, drop, &x, train)
    }
}

// ---------------------------------------------------------------------------------------
// The stacks

/// A layer or a stack, built from its parts.
trait Build: Sized {
    /// The layer or stack whose parameters, dropout and options `parts` gives.
    fn build(parts: &Parts<'_>) -> Result<Self>;
}

/// A layer or stack at `vb` initialised as PyTorch initialises it alone (each matrix
/// with its layer's own default), after checking `options`.
fn alone<T: Build>(vb: &VarBuilder, options: &TransformerOptions, dropout: &Dropout) -> Result<T> {
    options.validate()?;
    T::build(&Parts::new(vb, options, Matrices::Layer, dropout))
}

impl Build for TransformerEncoderLayer {
    fn build(parts: &Parts<'_>) -> Result<Self> {
        Ok(TransformerEncoderLayer {
            self_attn: parts.attention("self_attn")?,
            feed_forward: FeedForward::build(parts)?,
            norm1: parts.norm("norm1")?,
            norm2: parts.norm("norm2")?,
            dropout: parts.dropout(),
            norm_first: parts.options.norm_first,
        })
    }
}

impl Build for TransformerDecoderLayer {
    fn build(parts: &Parts<'_>) -> Result<Self> {
        Ok(TransformerDecoderLayer {
            self_attn: parts.attention("self_attn")?,
            multihead_attn: parts.attention("multihead_attn")?,
            feed_forward: FeedForward::build(parts)?,
            norm1: parts.norm("norm1")?,
            norm2: parts.norm("norm2")?,
            norm3: parts.norm("norm3")?,
            dropout: parts.dropout(),
            norm_first: parts.options.norm_first,
        })
    }
}

/// `n` layers at `layers.{i}` and, with `final_norms`, the norm at `norm`, under the
/// path of `parts`.
fn stack<L: Build>(parts: &Parts<'_>, n: usize) -> Result<(Vec<L>, Option<LayerNorm>)> {
    let layers = (0..n)
        .map(|i| L::build(&parts.at("layers").at(i)))
        .collect::<Result<_>>()?;
    let norm = parts.options.final_norms;
    let norm = norm.then(|| parts.norm("norm")).transpose()?;
    Ok((layers, norm))
}

impl Build for TransformerEncoder {
    fn build(parts: &Parts<'_>) -> Result<Self> {
        let (layers, norm) = stack(parts, parts.options.num_encoder_layers)?;
        Ok(TransformerEncoder { layers, norm })
    }
}

impl Build for TransformerDecoder {
    fn build(parts: &Parts<'_>) -> Result<Self> {
        let (layers, norm) = stack(parts, parts.options.num_decoder_layers)?;
        Ok(TransformerDecoder { layers, norm })
    }
}

/// `norm(x)` where the stack has a final norm.
fn final_norm(norm: &Option<LayerNorm>, x: Var) -> Result<Var> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

/// PyTorch's `nn.TransformerEncoder`: a stack of encoder layers and an optional final
/// LayerNorm. Parameters `layers.{i}.*`, `norm.*`.
#[derive(Clone, Debug)]
pub struct TransformerEncoder {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer>,
    /// The final LayerNorm.
    pub norm: Option<LayerNorm>,
}

/// What [`TransformerEncoder::forward_intermediates`] returns.
#[derive(Clone, Debug)]
pub struct EncoderIntermediates {
    /// Each layer's output, `[B, S, d_model]`, in order (before the final norm).
    pub layers: Vec<Var>,
    /// The encoder's output (after the final norm, when there is one).
    pub output: Var,
}

impl TransformerEncoder {
    /// PyTorch's `nn.TransformerEncoder(layer, options.num_encoder_layers, norm)`: the
    /// layers at `vb.pp("layers")`, each initialised as a layer alone, and with
    /// `options.final_norms` the norm at `vb.pp("norm")`; one dropout generator, `dropout`'s.
    pub fn new(vb: &VarBuilder, options: &TransformerOptions, dropout: &Dropout) -> Result<Self> {
        alone(vb, options, dropout)
    }

    /// PyTorch's `forward(src, mask, src_key_padding_mask, is_causal)`, the masks taken
    /// from `masks.src_*`.
    pub fn forward_masked(&self, src: &Var, masks: &TransformerMasks, train: bool) -> Result<Var> {
        Ok(self.run(src, masks, train, false)?.output)
    }

    /// The output of every layer and of the stack (the final norm applied), for probing
    /// what each layer computes (as timm's `forward_intermediates` for the ViT).
    ///
    /// ```
    /// use tessera_nn::{Dropout, TransformerEncoder, TransformerMasks, TransformerOptions, Var, VarMap};
    /// use tessera_tensor::{Rng, Tensor};
    /// let options = TransformerOptions { d_model: 8, nhead: 2, dim_feedforward: 16, num_encoder_layers: 3, ..Default::default() };
    /// let (encoder, _) = VarMap::build(&mut Rng::seed(0), |vb| TransformerEncoder::new(vb, &options, &Dropout::new(0.1, 0)))?;
    /// let x = Var::constant(Tensor::randn(&[2, 5, 8], 0.0, 1.0, &mut Rng::seed(1)));
    /// let all = encoder.forward_intermediates(&x, &TransformerMasks::default(), false)?;
    /// assert_eq!(all.layers.len(), 3);
    /// let direct = encoder.forward_masked(&x, &TransformerMasks::default(), false)?;
    /// assert_eq!(all.output.value().to_vec(), direct.value().to_vec());
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn forward_intermediates(
        &self,
        src: &Var,
        masks: &TransformerMasks,
        train: bool,
    ) -> Result<EncoderIntermediates> {
        self.run(src, masks, train, true)
    }

    /// The stack, keeping each layer's output when `keep`.
    fn run(
        &self,
        src: &Var,
        m: &TransformerMasks,
        train: bool,
        keep: bool,
    ) -> Result<EncoderIntermediates> {
        let mut x = src.clone();
        let mut layers = Vec::new();
        if let Some(first) = self.layers.first() {
            let padding = m.src_key_padding_mask.as_ref();
            let mask = first.mask_for(src, m.src_mask.as_ref(), m.src_is_causal, padding)?;
            for layer in &self.layers {
                x = layer.forward_merged(&x, mask.as_ref(), train)?;
                if keep {
                    layers.push(x.clone());
                }
            }
        }
        let output = final_norm(&self.norm, x)?;
        Ok(EncoderIntermediates { layers, output })
    }
}

impl Module for TransformerEncoder {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_masked(x, &TransformerMasks::default(), false)
    }

    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        self.forward_masked(x, &TransformerMasks::default(), train)
    }
}

/// PyTorch's `nn.TransformerDecoder`: a stack of decoder layers and an optional final
/// LayerNorm. Parameters `layers.{i}.*`, `norm.*`.
#[derive(Clone, Debug)]
pub struct TransformerDecoder {
    /// The layers, applied in order.
    pub layers: Vec<TransformerDecoderLayer>,
    /// The final LayerNorm.
    pub norm: Option<LayerNorm>,
}

impl TransformerDecoder {
    /// The decoder stack of `options.num_decoder_layers` layers (PyTorch's
    /// `nn.TransformerDecoder`), built as [`TransformerEncoder::new`] builds the encoder.
    pub fn new(vb: &VarBuilder, options: &TransformerOptions, dropout: &Dropout) -> Result<Self> {
        alone(vb, options, dropout)
    }

    /// The layers in turn, then the final norm: PyTorch's `nn.TransformerDecoder`
    /// `forward`, with the arguments of [`TransformerDecoderLayer::forward_masked`]. The
    /// masks are merged once, for all layers.
    pub fn forward_masked(
        &self,
        tgt: &Var,
        memory: &Var,
        masks: &TransformerMasks,
        train: bool,
    ) -> Result<Var> {
        let mut x = tgt.clone();
        if let Some(first) = self.layers.first() {
            let (self_mask, memory_mask) = first.masks_for(tgt, memory, masks)?;
            for layer in &self.layers {
                x = layer.forward_merged(
                    &x,
                    memory,
                    self_mask.as_ref(),
                    memory_mask.as_ref(),
                    train,
                )?;
            }
        }
        final_norm(&self.norm, x)
    }
}

// ---------------------------------------------------------------------------------------
// The encoder-decoder

/// PyTorch's `nn.Transformer(batch_first=True)`: the encoder and decoder stacks, each
/// with its final LayerNorm. Parameters `encoder.layers.{i}.*`, `encoder.norm.*`,
/// `decoder.layers.{i}.*`, `decoder.norm.*`: a `torch.nn.Transformer` state dict loads
/// as it is ([`VarMap::load`](crate::VarMap::load)).
///
/// ```
/// use tessera_nn::{Transformer, TransformerMasks, TransformerOptions, Var, VarMap};
/// use tessera_tensor::{Rng, Tensor};
/// let options = TransformerOptions {
///     d_model: 8, nhead: 2, num_encoder_layers: 1, num_decoder_layers: 1,
///     dim_feedforward: 16, ..Default::default()
/// };
/// let (model, vars) = VarMap::build(&mut Rng::seed(0), |vb| Transformer::new(vb, &options))?;
/// let src = Var::constant(Tensor::randn(&[2, 5, 8], 0.0, 1.0, &mut Rng::seed(1)));
/// let tgt = Var::constant(Tensor::randn(&[2, 4, 8], 0.0, 1.0, &mut Rng::seed(2)));
/// let masks = TransformerMasks { tgt_mask: Some(Transformer::generate_square_subsequent_mask(4)), ..Default::default() };
/// let y = model.forward_masked(&src, &tgt, &masks, false)?;
/// assert_eq!(y.shape(), &[2, 4, 8]);
/// assert_eq!(vars.names()[0], "encoder.layers.0.self_attn.in_proj_weight");
/// assert_eq!(vars.names().last().unwrap(), "decoder.norm.bias");
/// # Ok::<(), tessera_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Transformer {
    /// The encoder stack.
    pub encoder: TransformerEncoder,
    /// The decoder stack.
    pub decoder: TransformerDecoder,
}

impl Transformer {
    /// PyTorch's `nn.Transformer(**options, batch_first=True)` at `vb`, initialised as
    /// PyTorch does (every matrix Xavier-uniform, biases as each layer's own default,
    /// LayerNorm `γ = 1, β = 0`); dropout masks drawn from `Rng::seed(0)` (see
    /// [`Transformer::with_dropout`]).
    pub fn new(vb: &VarBuilder, options: &TransformerOptions) -> Result<Self> {
        Self::with_dropout(vb, options, &Dropout::new(options.dropout, 0))
    }

    /// [`Transformer::new`] whose layers draw dropout masks from `dropout`'s generator.
    pub fn with_dropout(
        vb: &VarBuilder,
        options: &TransformerOptions,
        dropout: &Dropout,
    ) -> Result<Self> {
        options.validate()?;
        let parts = Parts::new(vb, options, Matrices::Xavier, dropout);
        Ok(Transformer {
            encoder: Build::build(&parts.at("encoder"))?,
            decoder: Build::build(&parts.at("decoder"))?,
        })
    }

    /// PyTorch's `forward(src, tgt, src_mask, tgt_mask, memory_mask,
    /// src_key_padding_mask, tgt_key_padding_mask, memory_key_padding_mask,
    /// src_is_causal, tgt_is_causal)`: the decoder's output over the encoder's memory.
    ///
    /// # Shapes
    /// `src [B, S, d_model]`, `tgt [B, T, d_model]` -> `[B, T, d_model]`.
    pub fn forward_masked(
        &self,
        src: &Var,
        tgt: &Var,
        masks: &TransformerMasks,
        train: bool,
    ) -> Result<Var> {
        if let (Some(&bs), Some(&bt)) = (src.shape().first(), tgt.shape().first()) {
            if bs != bt {
                let expected = format!("tgt with the batch of src ({bs})");
                return Err(Error::shape("Transformer", expected, tgt.shape()));
            }
        }
        let memory = self.encoder.forward_masked(src, masks, train)?;
        self.decoder.forward_masked(tgt, &memory, masks, train)
    }

    /// PyTorch's `Transformer.generate_square_subsequent_mask(t)`: the float causal
    /// mask `[t, t]`, 0 on and below the diagonal, -inf above.
    ///
    /// ```
    /// use tessera_nn::{AttnMask, Transformer};
    /// let AttnMask::Additive(m) = Transformer::generate_square_subsequent_mask(2) else { unreachable!() };
    /// assert_eq!(m.to_vec(), [0.0, f32::NEG_INFINITY, 0.0, 0.0]);
    /// ```
    pub fn generate_square_subsequent_mask(t: usize) -> AttnMask {
        let bias = AttnMask::causal(t).additive().expect("a t x t mask");
        AttnMask::Additive(bias)
    }
}
