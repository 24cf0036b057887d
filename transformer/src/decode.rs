//! Decoding: greedy and beam search ("Attention Is All You Need", §6.1: beam 4, length
//! penalty α = 0.6, at most input length + 50 tokens) on an incremental decoder.
//!
//! The fast path and its reference stand side by side: [`Transformer::decode_step`]
//! feeds one position at a time and takes the keys and values of earlier positions from
//! a [`DecoderCache`] (the encoder's are projected once), and [`Transformer::greedy`]
//! without `use_cache` re-runs the plain decoder ([`Transformer::decode_hidden`]) on the
//! whole prefix at every step. `tests/decode.rs`
//! checks that the two give the same logits at every step and the same tokens.

use tessera_autograd::{no_grad, Var};
use tessera_nn::{AttnMask, Module, TransformerDecoderLayer};
use tessera_tensor::{IndexTensor, Tensor};

use crate::model::{PadId, Transformer};
use crate::{Error, Result};

/// What incremental decoding keeps between steps: the encoder's keys and values for
/// every decoder layer (computed once) and the decoder's own keys and values of the
/// positions produced so far. Made by [`Transformer::start_decoding`].
#[derive(Debug)]
pub struct DecoderCache {
    memory_mask: Option<AttnMask>,
    /// Per layer, the memory's keys `[B, H, S, d_k]` and values `[B, H, S, d_v]`.
    cross: Vec<(Var, Var)>,
    /// Per layer, the past positions' keys `[B, H, t, d_k]` and values `[B, H, t, d_v]`.
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
            let expected = format!("below the batch of {}", self.batch);
            return Err(Error::setting(
                "DecoderCache::reorder",
                "row",
                bad,
                expected,
            ));
        }
        let pick = |v: &Var| -> Result<Var> { Ok(v.index_select(0, rows)?) };
        for (k, v) in self.cross.iter_mut().chain(self.past.iter_mut().flatten()) {
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

/// One new position `[B, 1, d_model]` through `layer`, attending to the cached past
/// (extended here) and to the encoder's projected memory (evaluation mode): the same
/// sublayers as the full layer, with the keys and values from the cache.
fn step(
    layer: &TransformerDecoderLayer,
    x: &Var,
    past: &mut Option<(Var, Var)>,
    cross: &(Var, Var),
    memory_mask: Option<&AttnMask>,
) -> Result<Var> {
    let mha = &layer.self_attn;
    let self_attn = |h: &Var| -> tessera_nn::Result<Var> {
        let (k, v) = mha.project_kv(h, h)?; // [B, H, 1, d_k], [B, H, 1, d_v]
        let (k, v) = match past.take() {
            // [B, H, t + 1, d_k], [B, H, t + 1, d_v]
            Some((pk, pv)) => (Var::concat(&[&pk, &k], 2)?, Var::concat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let out = mha.attend(h, &k, &v, None)?;
        *past = Some((k, v));
        Ok(out)
    };
    let cross_attn = |h: &Var| -> tessera_nn::Result<Var> {
        let (k, v) = cross;
        layer.multihead_attn.attend(h, k, v, memory_mask)
    };
    Ok(layer.sublayers(x, false, self_attn, cross_attn)?)
}

impl Transformer {
    /// Encodes `src` `[B, S]` and projects the memory for every decoder layer: the start
    /// of incremental decoding with [`Transformer::decode_step`].
    pub fn start_decoding(&self, src: &IndexTensor, pad: PadId) -> Result<DecoderCache> {
        no_grad(|| {
            let memory = self.encode(src, pad, false)?;
            let layers = &self.transformer.decoder.layers;
            let cross = layers
                .iter()
                .map(|l| Ok(l.multihead_attn.project_kv(&memory, &memory)?))
                .collect::<Result<Vec<_>>>()?;
            Ok(DecoderCache {
                memory_mask: Self::memory_mask(src, pad)?,
                cross,
                past: vec![None; layers.len()],
                len: 0,
                batch: src.shape()[0],
            })
        })
    }

    /// Feeds one token per sequence and returns the next-token logits. Each step costs
    /// one position, not the whole prefix: the keys and values of earlier positions come
    /// from the cache.
    ///
    /// # Shapes
    /// `tokens [B]` -> `[B, tgt_vocab]`.
    pub fn decode_step(&self, cache: &mut DecoderCache, tokens: &[usize]) -> Result<Tensor> {
        if tokens.len() != cache.batch {
            return Err(Error::Count {
                op: "Transformer::decode_step",
                what: "tokens (one per sequence)",
                expected: cache.batch,
                got: tokens.len(),
            });
        }
        no_grad(|| {
            let ids = IndexTensor::new(tokens.to_vec(), &[cache.batch, 1])?;
            let mut x = self.embed(&ids, true, cache.len, false)?; // [B, 1, d]
            let decoder = &self.transformer.decoder;
            for (i, layer) in decoder.layers.iter().enumerate() {
                let mask = cache.memory_mask.as_ref();
                x = step(layer, &x, &mut cache.past[i], &cache.cross[i], mask)?;
            }
            if let Some(n) = &decoder.norm {
                x = n.forward(&x)?;
            }
            cache.len += 1;
            let logits = self.logits(&x)?; // [B, 1, V]
            Ok(logits
                .value()
                .reshape(&[cache.batch, self.config().tgt_vocab])?)
        })
    }

    /// Greedy decoding: from `bos`, append the most likely token until every sequence
    /// has produced `eos`, or `max_len` new tokens; returns each sequence's new tokens
    /// (up to and including `eos`).
    ///
    /// With `use_cache` (as Hugging Face's `generate(use_cache=True)`), each step feeds
    /// one position through [`Transformer::decode_step`], the keys and values of earlier
    /// positions taken from a [`DecoderCache`]. Without it the plain decoder re-runs on
    /// the whole prefix at every step, at quadratic cost: the reference the cache is
    /// checked against, giving the same tokens.
    ///
    /// # Shapes
    /// `src [B, S]` -> `B` sequences of at most `max_len` tokens.
    pub fn greedy(
        &self,
        src: &IndexTensor,
        bos: usize,
        eos: usize,
        max_len: usize,
        pad: PadId,
        use_cache: bool,
    ) -> Result<Vec<Vec<usize>>> {
        if use_cache {
            let mut cache = self.start_decoding(src, pad)?;
            let mut current = vec![bos; cache.batch];
            return greedy_loop(cache.batch, eos, max_len, || {
                let logits = self.decode_step(&mut cache, &current)?;
                let next = logits.argmax(-1, false)?.data().to_vec();
                current.clone_from(&next);
                Ok(next)
            });
        }
        no_grad(|| {
            let b = src.shape()[0];
            let memory = self.encode(src, pad, false)?;
            let mut seqs: Vec<Vec<usize>> = vec![vec![bos]; b];
            greedy_loop(b, eos, max_len, || {
                let t = seqs[0].len();
                let flat: Vec<usize> = seqs.iter().flatten().copied().collect();
                let tgt = IndexTensor::new(flat, &[b, t])?;
                let h = self.decode_hidden(&tgt, &memory, src, pad, false)?; // [B, t, d]
                let logits = self.logits(&h.narrow(1, t - 1, 1)?)?; // [B, 1, V]
                let next = logits.value().argmax(-1, false)?.data().to_vec();
                for (s, &n) in seqs.iter_mut().zip(&next) {
                    s.push(n);
                }
                Ok(next)
            })
        })
    }

    /// Beam search for one source sentence, as the paper decodes: `beam` hypotheses,
    /// length penalty `((5 + |Y|) / 6)^α` (Wu et al., 2016; the paper uses beam 4 and
    /// α = 0.6), at most `max_len` new tokens (the paper: input length + 50). Hypotheses
    /// end at `eos`; the search stops when the best finished hypothesis can no longer be
    /// beaten. Returns the best hypothesis's tokens (ending with `eos` if it was
    /// produced) and its length-normalised log-probability.
    ///
    /// # Shapes
    /// `src [1, S]` -> at most `max_len` tokens.
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
        const OP: &str = "Transformer::beam_search";
        if src.shape().len() != 2 || src.shape()[0] != 1 {
            return Err(Error::shape(OP, "one source sentence [1, S]", src.shape()));
        }
        if beam == 0 {
            return Err(Error::setting(OP, "beam", beam, "at least 1"));
        }
        let too_short = || Error::setting(OP, "max_len", max_len, "at least 1");
        if max_len == 0 {
            return Err(too_short());
        }
        let penalty = |len: usize| ((5.0 + len as f32) / 6.0).powf(alpha);
        let v = self.config().tgt_vocab;
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
            let logp = logits.log_softmax(-1)?.to_vec(); // [live, V]

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
        finished
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(too_short)
    }
}

/// The bookkeeping of greedy decoding for `b` sequences: `next()` gives each
/// sequence's next token; a sequence is done after `eos`; at most `max_len` steps.
fn greedy_loop(
    b: usize,
    eos: usize,
    max_len: usize,
    mut next: impl FnMut() -> Result<Vec<usize>>,
) -> Result<Vec<Vec<usize>>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    for _ in 0..max_len {
        let tokens = next()?;
        for ((o, d), &t) in out.iter_mut().zip(done.iter_mut()).zip(&tokens) {
            if !*d {
                o.push(t);
                *d = t == eos;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(out)
}

#[cfg(feature = "bpe")]
impl Transformer {
    /// Translates one line of text: encoded by `bpe`, cut to the model's positions, then
    /// decoded greedily (`beam` ≤ 1) or by beam search with length penalty `alpha`, at
    /// most 50 tokens longer than the source.
    pub fn translate(
        &self,
        bpe: &tessera_data::Bpe,
        line: &str,
        beam: usize,
        alpha: f32,
    ) -> Result<String> {
        let mut ids = bpe.encode(line)?;
        let max_len = self.config().max_len;
        ids.truncate(max_len - 1);
        ids.push(bpe.eos());
        let n = ids.len();
        let src = IndexTensor::new(ids, &[1, n])?;
        let limit = (n + 50).min(max_len - 1);
        let mut out = if beam <= 1 {
            self.greedy(&src, bpe.bos(), bpe.eos(), limit, None, true)?
                .remove(0)
        } else {
            self.beam_search(&src, bpe.bos(), bpe.eos(), beam, alpha, limit, None)?
                .0
        };
        if out.last() == Some(&bpe.eos()) {
            out.pop();
        }
        Ok(bpe.decode(&out)?)
    }

    /// Translates each of `sources` in turn (as [`Transformer::translate`]), lazily, so
    /// that a caller can show progress or stop early.
    pub fn translations<'a>(
        &'a self,
        bpe: &'a tessera_data::Bpe,
        sources: impl IntoIterator<Item = &'a str> + 'a,
        beam: usize,
        alpha: f32,
    ) -> impl Iterator<Item = Result<String>> + 'a {
        sources
            .into_iter()
            .map(move |src| self.translate(bpe, src, beam, alpha))
    }

    /// Translates every one of `sources` (as [`Transformer::translate`]), in order, the
    /// sentences spread over the threads of [`tessera_tensor::set_num_threads`], one
    /// sentence to a thread at a time (decoding one sentence is a chain of small
    /// products that threads would only slow). The translations are those of
    /// [`Transformer::translations`]. `done(k)` is called as the `k`-th sentence
    /// finishes, from the thread that finished it; the first error (in the sources'
    /// order) is returned.
    ///
    /// ```no_run
    /// # fn demo(model: &tessera_transformer::Transformer, bpe: &tessera_data::Bpe) -> tessera_transformer::Result<()> {
    /// let hyps = model.translate_all(bpe, &["ein Hund", "eine Katze"], 4, 0.6, |k| eprintln!("{k} done"))?;
    /// assert_eq!(hyps.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn translate_all(
        &self,
        bpe: &tessera_data::Bpe,
        sources: &[&str],
        beam: usize,
        alpha: f32,
        done: impl Fn(usize) + Sync,
    ) -> Result<Vec<String>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let slots: Vec<Mutex<Option<Result<String>>>> =
            sources.iter().map(|_| Mutex::new(None)).collect();
        let finished = AtomicUsize::new(0);
        tessera_tensor::parallel_for(sources.len(), |i| {
            let result = self.translate(bpe, sources[i], beam, alpha);
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            done(finished.fetch_add(1, Ordering::Relaxed) + 1);
        });
        slots
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("parallel_for runs every task")
            })
            .collect()
    }

    /// Translates the sources of `pairs` (as [`Transformer::translate`]) and scores the
    /// translations against the pairs' references with [`corpus_bleu`](crate::corpus_bleu)
    /// (sacreBLEU's defaults): the score and the translations, in order.
    pub fn bleu(
        &self,
        bpe: &tessera_data::Bpe,
        pairs: &[(String, String)],
        beam: usize,
        alpha: f32,
    ) -> Result<(crate::Bleu, Vec<String>)> {
        let sources = pairs.iter().map(|(src, _)| src.as_str());
        let hyps = self
            .translations(bpe, sources, beam, alpha)
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = pairs.iter().map(|(_, r)| r.as_str()).collect();
        Ok((crate::corpus_bleu(&hyps, &refs)?, hyps))
    }
}
