//! The encoder-decoder of "Attention Is All You Need", with PyTorch's `nn.Transformer`
//! parameter names.

use std::sync::Mutex;

use tessera_autograd::{Parameter, Var};
use tessera_nn::{AttnMask, Embedding, LayerNorm, Linear, Module, MultiHeadAttention, Params};
use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::config::{Positional, TransformerConfig};
use crate::{input_err, Result};

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The sinusoidal table `PE(pos, 2i) = sin(pos / 10000^(2i/d))`,
/// `PE(pos, 2i+1) = cos(pos / 10000^(2i/d))`, `[len, d]`.
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

/// Dropout with the model's one generator (saved with training checkpoints, so that a
/// resumed run draws the same masks).
fn dropout(x: &Var, p: f32, train: bool, rng: &Mutex<Rng>) -> Result<Var> {
    if !train || p == 0.0 {
        return Ok(x.clone());
    }
    let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
    Ok(x.dropout(p, true, &mut rng)?)
}

/// Attention with dropout on its probabilities.
#[derive(Debug)]
struct Attention {
    mha: MultiHeadAttention,
    p: f32,
}

impl Attention {
    fn new(c: &TransformerConfig, rng: &mut Rng) -> Result<Attention> {
        let mha = if c.d_k * c.heads == c.d_model && c.d_v * c.heads == c.d_model {
            MultiHeadAttention::new(c.d_model, c.heads, tessera_nn::AttnNames::Torch, rng)?
        } else {
            MultiHeadAttention::with_head_dims(c.d_model, c.heads, c.d_k, c.d_v, rng)?
        };
        Ok(Attention { mha, p: c.dropout })
    }

    fn forward(
        &self,
        q: &Var,
        kv: &Var,
        mask: Option<&AttnMask>,
        train: bool,
        rng: &Mutex<Rng>,
    ) -> Result<Var> {
        if train && self.p > 0.0 {
            let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
            Ok(self
                .mha
                .forward_qkv(q, kv, kv, mask, Some((self.p, &mut *rng)), false)?
                .0)
        } else {
            Ok(self.mha.forward_qkv(q, kv, kv, mask, None, false)?.0)
        }
    }
}

/// `linear2(dropout(relu(linear1(x))))`.
#[derive(Debug)]
struct FeedForward {
    linear1: Linear,
    linear2: Linear,
    p: f32,
}

impl FeedForward {
    fn new(c: &TransformerConfig, rng: &mut Rng) -> FeedForward {
        FeedForward {
            linear1: Linear::new(c.d_model, c.d_ff, true, rng),
            linear2: Linear::new(c.d_ff, c.d_model, true, rng),
            p: c.dropout,
        }
    }

    /// `linear1.*`, `linear2.*` under the layer's prefix (PyTorch names them there).
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        self.linear1.collect_params(&join(prefix, "linear1"), out);
        self.linear2.collect_params(&join(prefix, "linear2"), out);
    }

    fn forward(&self, x: &Var, train: bool, rng: &Mutex<Rng>) -> Result<Var> {
        let h = dropout(&self.linear1.forward(x)?.relu(), self.p, train, rng)?;
        Ok(self.linear2.forward(&h)?)
    }
}

/// Whether a sublayer runs in training, and the model's dropout generator.
#[derive(Clone, Copy)]
struct Mode<'a> {
    p: f32,
    norm_first: bool,
    train: bool,
    rng: &'a Mutex<Rng>,
}

/// `norm(x + dropout(f(x)))` (post-norm) or `x + dropout(f(norm(x)))` (pre-norm).
fn sublayer(
    x: &Var,
    norm: &LayerNorm,
    m: Mode<'_>,
    f: impl FnOnce(&Var) -> Result<Var>,
) -> Result<Var> {
    if m.norm_first {
        let y = f(&norm.forward(x)?)?;
        Ok(x.add(&dropout(&y, m.p, m.train, m.rng)?)?)
    } else {
        let y = f(x)?;
        Ok(norm.forward(&x.add(&dropout(&y, m.p, m.train, m.rng)?)?)?)
    }
}

/// One encoder layer (`nn.TransformerEncoderLayer`: `self_attn`, `linear1`, `linear2`,
/// `norm1`, `norm2`).
#[derive(Debug)]
struct EncoderLayer {
    self_attn: Attention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
}

impl EncoderLayer {
    fn new(c: &TransformerConfig, rng: &mut Rng) -> Result<EncoderLayer> {
        Ok(EncoderLayer {
            self_attn: Attention::new(c, rng)?,
            ff: FeedForward::new(c, rng),
            norm1: LayerNorm::new(c.d_model, 1e-5),
            norm2: LayerNorm::new(c.d_model, 1e-5),
        })
    }

    fn forward(&self, x: &Var, mask: Option<&AttnMask>, m: Mode<'_>) -> Result<Var> {
        let x = sublayer(x, &self.norm1, m, |h| {
            self.self_attn.forward(h, h, mask, m.train, m.rng)
        })?;
        sublayer(&x, &self.norm2, m, |h| self.ff.forward(h, m.train, m.rng))
    }
}

impl Params for EncoderLayer {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        self.self_attn
            .mha
            .collect_params(&join(prefix, "self_attn"), out);
        self.ff.collect_params(prefix, out);
        self.norm1.collect_params(&join(prefix, "norm1"), out);
        self.norm2.collect_params(&join(prefix, "norm2"), out);
    }
}

/// One decoder layer (`nn.TransformerDecoderLayer`: `self_attn`, `multihead_attn`,
/// `linear1`, `linear2`, `norm1`..`norm3`).
#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    cross_attn: Attention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
}

impl DecoderLayer {
    fn new(c: &TransformerConfig, rng: &mut Rng) -> Result<DecoderLayer> {
        Ok(DecoderLayer {
            self_attn: Attention::new(c, rng)?,
            cross_attn: Attention::new(c, rng)?,
            ff: FeedForward::new(c, rng),
            norm1: LayerNorm::new(c.d_model, 1e-5),
            norm2: LayerNorm::new(c.d_model, 1e-5),
            norm3: LayerNorm::new(c.d_model, 1e-5),
        })
    }

    fn forward(
        &self,
        x: &Var,
        memory: &Var,
        self_mask: Option<&AttnMask>,
        memory_mask: Option<&AttnMask>,
        m: Mode<'_>,
    ) -> Result<Var> {
        let x = sublayer(x, &self.norm1, m, |h| {
            self.self_attn.forward(h, h, self_mask, m.train, m.rng)
        })?;
        self.cross_and_feed_forward(&x, m, |h| {
            self.cross_attn
                .forward(h, memory, memory_mask, m.train, m.rng)
        })
    }

    /// One new position `[B, 1, d]` attending to the cached past (extended here) and to
    /// the encoder's projected memory (evaluation mode).
    fn step(
        &self,
        x: &Var,
        past: &mut Option<(Var, Var)>,
        cross: &(Var, Var),
        memory_mask: Option<&AttnMask>,
        m: Mode<'_>,
    ) -> Result<Var> {
        let x = sublayer(x, &self.norm1, m, |h| {
            let (k, v) = self.self_attn.mha.project_kv(h, h)?;
            let (k, v) = match past.take() {
                Some((pk, pv)) => (Var::concat(&[&pk, &k], 2)?, Var::concat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let out = self.self_attn.mha.attend(h, &k, &v, None, None, false)?.0;
            *past = Some((k, v));
            Ok(out)
        })?;
        self.cross_and_feed_forward(&x, m, |h| {
            Ok(self
                .cross_attn
                .mha
                .attend(h, &cross.0, &cross.1, memory_mask, None, false)?
                .0)
        })
    }

    /// The encoder-decoder attention sublayer (`cross` attends `h` over the memory) and
    /// the feed-forward sublayer, shared by full and incremental decoding.
    fn cross_and_feed_forward(
        &self,
        x: &Var,
        m: Mode<'_>,
        cross: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Var> {
        let x = sublayer(x, &self.norm2, m, cross)?;
        sublayer(&x, &self.norm3, m, |h| self.ff.forward(h, m.train, m.rng))
    }
}

impl Params for DecoderLayer {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        self.self_attn
            .mha
            .collect_params(&join(prefix, "self_attn"), out);
        self.cross_attn
            .mha
            .collect_params(&join(prefix, "multihead_attn"), out);
        self.ff.collect_params(prefix, out);
        self.norm1.collect_params(&join(prefix, "norm1"), out);
        self.norm2.collect_params(&join(prefix, "norm2"), out);
        self.norm3.collect_params(&join(prefix, "norm3"), out);
    }
}

/// The Transformer of "Attention Is All You Need" (see the [crate documentation](crate)).
///
/// Parameter names are those of a module holding `embed` (`nn.Embedding`, shared by
/// source, target and the pre-softmax projection) and `transformer` (`nn.Transformer`):
/// `embed.weight`, `transformer.encoder.layers.0.self_attn.in_proj_weight`, ...,
/// `transformer.decoder.layers.5.multihead_attn.out_proj.bias`, and with
/// [`TransformerConfig::final_norms`] `transformer.encoder.norm.weight`, ... Unshared
/// vocabularies use `src_embed.weight`, `tgt_embed.weight` and `generator.weight`; learned
/// positions `pos_embed.weight`.
#[derive(Debug)]
pub struct Transformer {
    config: TransformerConfig,
    src_embed: Embedding,
    tgt_embed: Option<Embedding>,
    generator: Option<Parameter>,
    pos_embed: Option<Parameter>,
    pe: Tensor,
    /// The one dropout generator.
    rng: Mutex<Rng>,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    encoder_norm: Option<LayerNorm>,
    decoder_norm: Option<LayerNorm>,
}

/// What incremental decoding keeps between steps: the encoder's keys and values for
/// every decoder layer (computed once) and the decoder's own keys and values of the
/// positions produced so far. Made by [`Transformer::start_decoding`].
#[derive(Debug)]
pub struct DecoderCache {
    memory_mask: Option<AttnMask>,
    cross: Vec<(Var, Var)>,
    past: Vec<Option<(Var, Var)>>,
    len: usize,
    batch: usize,
}

impl DecoderCache {
    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was decoded yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps sequences `rows` (in that order, repeats allowed): what beam search does
    /// when hypotheses are extended, dropped or duplicated.
    pub fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(input_err(
                "DecoderCache::reorder",
                format!("row {bad} of a batch of {}", self.batch),
            ));
        }
        let pick = |v: &Var| -> Result<Var> { Ok(v.index_select(0, rows)?) };
        for (k, v) in self.cross.iter_mut() {
            *k = pick(k)?;
            *v = pick(v)?;
        }
        for (k, v) in self.past.iter_mut().flatten() {
            *k = pick(k)?;
            *v = pick(v)?;
        }
        if let Some(AttnMask::Keep(m)) = &self.memory_mask {
            self.memory_mask = Some(AttnMask::Keep(m.index_select(0, rows)?));
        }
        self.batch = rows.len();
        Ok(())
    }
}

/// Source and target padding for [`Transformer::forward`]: the id that marks padding.
pub type PadId = Option<usize>;

impl Transformer {
    /// A model with `torch_bench.py`'s initialisation: embeddings `N(0, d_model^-1/2)`,
    /// attention Xavier-uniform, linear layers PyTorch's default, LayerNorm `γ = 1, β = 0`.
    pub fn new(config: TransformerConfig, rng: &mut Rng) -> Result<Transformer> {
        config.validate()?;
        let c = &config;
        let d = c.d_model;
        let std = (d as f32).powf(-0.5);
        let table = |n: usize, rng: &mut Rng| -> Result<Embedding> {
            let mut e = Embedding::new(n, d, None, rng)?;
            e.weight = Parameter::new(Tensor::randn(&[n, d], 0.0, std, rng));
            Ok(e)
        };
        let src_embed = table(c.src_vocab, rng)?;
        let (tgt_embed, generator) = if c.share_embeddings {
            (None, None)
        } else {
            let t = table(c.tgt_vocab, rng)?;
            let g = Parameter::new(Tensor::randn(&[c.tgt_vocab, d], 0.0, std, rng));
            (Some(t), Some(g))
        };
        let pos_embed = (c.positional == Positional::Learned)
            .then(|| Parameter::new(Tensor::randn(&[c.max_len, d], 0.0, std, rng)));
        let encoder = (0..c.encoder_layers)
            .map(|_| EncoderLayer::new(c, rng))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..c.decoder_layers)
            .map(|_| DecoderLayer::new(c, rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            config,
            src_embed,
            tgt_embed,
            generator,
            pos_embed,
            pe: sinusoidal_encoding(c.max_len, d),
            rng: Mutex::new(Rng::seed(rng.below(1 << 30) as u64)),
            encoder,
            decoder,
            encoder_norm: c.final_norms.then(|| LayerNorm::new(d, 1e-5)),
            decoder_norm: c.final_norms.then(|| LayerNorm::new(d, 1e-5)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    fn mode(&self, train: bool) -> Mode<'_> {
        Mode {
            p: self.config.dropout,
            norm_first: self.config.norm_first,
            train,
            rng: &self.rng,
        }
    }

    /// The state of the dropout generator (key and position), for checkpoints.
    pub fn rng_state(&self) -> ([u8; 32], u128) {
        let rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        (rng.key(), rng.word_pos())
    }

    /// Restores the dropout generator saved by [`Transformer::rng_state`].
    pub fn set_rng_state(&self, key: [u8; 32], word_pos: u128) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = Rng::from_state(key, word_pos);
    }

    /// `dropout(E[ids] · √d_model + PE[offset .. offset + T])`, `[B, T, d_model]`.
    fn embed(&self, ids: &IndexTensor, target: bool, offset: usize, train: bool) -> Result<Var> {
        let &[_, t] = ids.shape() else {
            return Err(input_err(
                "Transformer",
                format!("expected token ids [B, T], got {:?}", ids.shape()),
            ));
        };
        let c = &self.config;
        if offset + t > c.max_len {
            return Err(input_err(
                "Transformer",
                format!(
                    "a sequence of {} positions is longer than max_len {}",
                    offset + t,
                    c.max_len
                ),
            ));
        }
        let (table, vocab) = match (&self.tgt_embed, target) {
            (Some(e), true) => (e, c.tgt_vocab),
            _ => (
                &self.src_embed,
                if target { c.tgt_vocab } else { c.src_vocab },
            ),
        };
        if let Some(&bad) = ids.data().iter().find(|&&i| i >= vocab) {
            return Err(input_err(
                "Transformer",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let x = table
            .forward_ids(ids)?
            .mul_scalar((c.d_model as f32).sqrt());
        let x = match &self.pos_embed {
            Some(p) => x.add(&p.var().narrow(0, offset, t)?)?,
            None => x.add(&Var::constant(self.pe.narrow(0, offset, t)?))?,
        };
        dropout(&x, c.dropout, train, &self.rng)
    }

    /// `[B, 1, 1, T]` keep-mask of the non-padding keys, when padding is used.
    fn key_mask(ids: &IndexTensor, pad: PadId) -> Result<Option<Tensor>> {
        let Some(pad) = pad else { return Ok(None) };
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let keep: Vec<f32> = ids
            .data()
            .iter()
            .map(|&i| (i != pad) as u8 as f32)
            .collect();
        Ok(Some(Tensor::from_vec(keep, &[b, 1, 1, t])?))
    }

    /// The encoder's output `[B, S, d_model]` for source ids `[B, S]`.
    pub fn encode(&self, src: &IndexTensor, pad: PadId, train: bool) -> Result<Var> {
        let mask = Self::key_mask(src, pad)?.map(AttnMask::Keep);
        let mut x = self.embed(src, false, 0, train)?;
        for layer in &self.encoder {
            x = layer.forward(&x, mask.as_ref(), self.mode(train))?;
        }
        match &self.encoder_norm {
            Some(n) => Ok(n.forward(&x)?),
            None => Ok(x),
        }
    }

    /// The decoder's output `[B, T, d_model]` for target inputs `[B, T]` (causally
    /// masked) over `memory` from [`Transformer::encode`] of `src`.
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
        let self_mask = match Self::key_mask(tgt, pad)? {
            Some(keys) => {
                let AttnMask::Keep(c) = causal else {
                    unreachable!("causal is a keep-mask")
                };
                AttnMask::Keep(keys.mul(&c)?)
            }
            None => causal,
        };
        let memory_mask = Self::key_mask(src, pad)?.map(AttnMask::Keep);
        let mut x = self.embed(tgt, true, 0, train)?;
        for layer in &self.decoder {
            x = layer.forward(
                &x,
                memory,
                Some(&self_mask),
                memory_mask.as_ref(),
                self.mode(train),
            )?;
        }
        match &self.decoder_norm {
            Some(n) => Ok(n.forward(&x)?),
            None => Ok(x),
        }
    }

    /// The pre-softmax projection `h Eᵀ` (tied) or `h Gᵀ`: `[..., tgt_vocab]`.
    pub fn logits(&self, h: &Var) -> Result<Var> {
        let w = match &self.generator {
            Some(g) => g.var(),
            None => self.src_embed.weight.var(),
        };
        let d = self.config.d_model;
        let lead: Vec<usize> = h.shape()[..h.shape().len() - 1].to_vec();
        let rows: usize = lead.iter().product();
        let y = h.reshape(&[rows, d])?.matmul(&w.transpose(0, 1)?)?;
        let mut shape = lead;
        shape.push(w.shape()[0]);
        Ok(y.reshape(&shape)?)
    }

    /// Logits `[B, T, tgt_vocab]` for source `[B, S]` and target inputs `[B, T]`.
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
    /// `tgt_out` `[B, T]` given `src` and `tgt_in`.
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
            return Err(input_err(
                "Transformer::loss",
                format!("expected targets [{b}, {t}], got {:?}", tgt_out.shape()),
            ));
        }
        let flat = IndexTensor::from_vec(tgt_out.data().to_vec());
        Ok(tessera_nn::cross_entropy(
            &logits.reshape(&[b * t, v])?,
            &flat,
            self.config.label_smoothing,
            pad,
        )?)
    }

    /// Encodes `src` and projects the memory for every decoder layer: the start of
    /// incremental decoding with [`Transformer::decode_step`].
    pub fn start_decoding(&self, src: &IndexTensor, pad: PadId) -> Result<DecoderCache> {
        tessera_autograd::no_grad(|| {
            let memory = self.encode(src, pad, false)?;
            let cross = self
                .decoder
                .iter()
                .map(|l| Ok(l.cross_attn.mha.project_kv(&memory, &memory)?))
                .collect::<Result<Vec<_>>>()?;
            Ok(DecoderCache {
                memory_mask: Self::key_mask(src, pad)?.map(AttnMask::Keep),
                cross,
                past: vec![None; self.decoder.len()],
                len: 0,
                batch: src.shape()[0],
            })
        })
    }

    /// Feeds one token per sequence (`[B]`) and returns the next-token logits `[B,
    /// tgt_vocab]`. Each step costs one position, not the whole prefix: the keys and
    /// values of earlier positions come from the cache.
    pub fn decode_step(&self, cache: &mut DecoderCache, tokens: &[usize]) -> Result<Tensor> {
        if tokens.len() != cache.batch {
            return Err(input_err(
                "Transformer::decode_step",
                format!(
                    "expected {} tokens (one per sequence), got {}",
                    cache.batch,
                    tokens.len()
                ),
            ));
        }
        tessera_autograd::no_grad(|| {
            let ids = IndexTensor::new(tokens.to_vec(), &[cache.batch, 1])?;
            let mut x = self.embed(&ids, true, cache.len, false)?;
            for (i, layer) in self.decoder.iter().enumerate() {
                x = layer.step(
                    &x,
                    &mut cache.past[i],
                    &cache.cross[i],
                    cache.memory_mask.as_ref(),
                    self.mode(false),
                )?;
            }
            if let Some(n) = &self.decoder_norm {
                x = n.forward(&x)?;
            }
            cache.len += 1;
            let logits = self.logits(&x)?;
            Ok(logits
                .value()
                .reshape(&[cache.batch, self.config.tgt_vocab])?)
        })
    }

    /// Greedy decoding with the key/value cache: from `bos`, append the most likely
    /// token until every sequence has produced `eos`, or `max_len` new tokens; returns
    /// each sequence's new tokens (up to and including `eos`).
    pub fn greedy(
        &self,
        src: &IndexTensor,
        bos: usize,
        eos: usize,
        max_len: usize,
        pad: PadId,
    ) -> Result<Vec<Vec<usize>>> {
        let mut cache = self.start_decoding(src, pad)?;
        let b = cache.batch;
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut current = vec![bos; b];
        for _ in 0..max_len {
            let logits = self.decode_step(&mut cache, &current)?;
            let next = argmax_rows(&logits.to_vec(), self.config.tgt_vocab);
            for i in 0..b {
                if !done[i] {
                    out[i].push(next[i]);
                    done[i] = next[i] == eos;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            current = next;
        }
        Ok(out)
    }

    /// Beam search for one source sentence (`src` `[1, S]`), as the paper decodes: `beam`
    /// hypotheses, length penalty `((5 + |Y|) / 6)^α` (Wu et al., 2016; the paper uses
    /// beam 4 and α = 0.6), at most `max_len` new tokens (the paper: input length + 50).
    /// Hypotheses end at `eos`; the search stops when the best finished hypothesis can no
    /// longer be beaten. Returns the best hypothesis's tokens (ending with `eos` if it
    /// was produced) and its length-normalised log-probability.
    #[allow(clippy::too_many_arguments)]
    pub fn beam_search(
        &self,
        src: &IndexTensor,
        bos: usize,
        eos: usize,
        beam: usize,
        alpha: f32,
        max_len: usize,
        pad: PadId,
    ) -> Result<(Vec<usize>, f32)> {
        if src.shape().first() != Some(&1) || beam == 0 {
            return Err(input_err(
                "Transformer::beam_search",
                format!(
                    "expected one source sentence [1, S] and beam ≥ 1, got {:?} and beam {beam}",
                    src.shape()
                ),
            ));
        }
        let penalty = |len: usize| ((5.0 + len as f32) / 6.0).powf(alpha);
        let v = self.config.tgt_vocab;
        let mut cache = self.start_decoding(src, pad)?;
        // Live hypotheses: tokens and summed log-probability.
        let mut live: Vec<(Vec<usize>, f32)> = vec![(Vec::new(), 0.0)];
        let mut finished: Vec<(Vec<usize>, f32)> = Vec::new();
        for step in 0..max_len {
            let last: Vec<usize> = live
                .iter()
                .map(|(t, _)| t.last().copied().unwrap_or(bos))
                .collect();
            let logits = self.decode_step(&mut cache, &last)?;
            let logp = logits.log_softmax(-1)?.to_vec();
            // The best 2·beam extensions of all live hypotheses.
            let mut cand: Vec<(f32, usize, usize)> = Vec::with_capacity(live.len() * v);
            for (h, (_, score)) in live.iter().enumerate() {
                for (tok, &lp) in logp[h * v..(h + 1) * v].iter().enumerate() {
                    cand.push((score + lp, h, tok));
                }
            }
            let keep = (2 * beam).min(cand.len());
            cand.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0));
            cand.truncate(keep);
            cand.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut next: Vec<(Vec<usize>, f32)> = Vec::with_capacity(beam);
            let mut rows = Vec::with_capacity(beam);
            for (score, h, tok) in cand {
                let mut tokens = live[h].0.clone();
                tokens.push(tok);
                if tok == eos {
                    let n = tokens.len();
                    finished.push((tokens, score / penalty(n)));
                } else if next.len() < beam {
                    next.push((tokens, score));
                    rows.push(h);
                }
                if next.len() == beam && finished.len() >= beam {
                    break;
                }
            }
            // Stop when no live hypothesis can still beat the best finished one: scores
            // only fall, and the penalty grows at most to that of max_len.
            let best_done = finished
                .iter()
                .map(|f| f.1)
                .fold(f32::NEG_INFINITY, f32::max);
            let best_live = next
                .iter()
                .map(|h| h.1 / penalty(max_len))
                .fold(f32::NEG_INFINITY, f32::max);
            if step + 1 == max_len {
                // Out of length: unfinished hypotheses compete as they are.
                finished.extend(next.iter().map(|(t, s)| (t.clone(), s / penalty(t.len()))));
                break;
            }
            if next.is_empty() || (finished.len() >= beam && best_done >= best_live) {
                break;
            }
            cache.reorder(&rows)?;
            live = next;
        }
        let best = finished
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| input_err("Transformer::beam_search", "no hypothesis".into()))?;
        Ok(best)
    }

    /// Greedy decoding without a cache: the decoder re-runs on the whole prefix at
    /// every step (the same tokens as [`Transformer::greedy`], at quadratic cost; kept to
    /// check the cache against).
    pub fn greedy_uncached(
        &self,
        src: &IndexTensor,
        bos: usize,
        eos: usize,
        max_len: usize,
        pad: PadId,
    ) -> Result<Vec<Vec<usize>>> {
        tessera_autograd::no_grad(|| {
            let b = src.shape()[0];
            let memory = self.encode(src, pad, false)?;
            let mut seqs: Vec<Vec<usize>> = vec![vec![bos]; b];
            let mut out: Vec<Vec<usize>> = vec![Vec::new(); b];
            let mut done = vec![false; b];
            for _ in 0..max_len {
                let t = seqs[0].len();
                let flat: Vec<usize> = seqs.iter().flatten().copied().collect();
                let tgt = IndexTensor::new(flat, &[b, t])?;
                let h = self.decode_hidden(&tgt, &memory, src, pad, false)?;
                let logits = self.logits(&h.narrow(1, t - 1, 1)?)?;
                let next = argmax_rows(&logits.value().to_vec(), self.config.tgt_vocab);
                for i in 0..b {
                    if !done[i] {
                        out[i].push(next[i]);
                        done[i] = next[i] == eos;
                    }
                    seqs[i].push(next[i]);
                }
                if done.iter().all(|&d| d) {
                    break;
                }
            }
            Ok(out)
        })
    }
}

/// The index of the largest value of each row of `cols` values.
fn argmax_rows(values: &[f32], cols: usize) -> Vec<usize> {
    values
        .chunks_exact(cols)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (j, &x)| {
                    if x > bv {
                        (j, x)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

impl Params for Transformer {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        if self.tgt_embed.is_none() {
            self.src_embed.collect_params(&join(prefix, "embed"), out);
        } else {
            self.src_embed
                .collect_params(&join(prefix, "src_embed"), out);
        }
        if let Some(t) = &self.tgt_embed {
            t.collect_params(&join(prefix, "tgt_embed"), out);
        }
        if let Some(g) = &self.generator {
            out.push((join(prefix, "generator.weight"), g.clone()));
        }
        if let Some(p) = &self.pos_embed {
            out.push((join(prefix, "pos_embed.weight"), p.clone()));
        }
        let tr = join(prefix, "transformer");
        for (i, l) in self.encoder.iter().enumerate() {
            l.collect_params(&format!("{tr}.encoder.layers.{i}"), out);
        }
        if let Some(n) = &self.encoder_norm {
            n.collect_params(&format!("{tr}.encoder.norm"), out);
        }
        for (i, l) in self.decoder.iter().enumerate() {
            l.collect_params(&format!("{tr}.decoder.layers.{i}"), out);
        }
        if let Some(n) = &self.decoder_norm {
            n.collect_params(&format!("{tr}.decoder.norm"), out);
        }
    }
}
