//! Batches of sequence pairs built by token count, as "Attention Is All You Need" batches
//! its training data ("sentence pairs batched together by approximate sequence length;
//! each batch contained ... approximately 25000 source tokens and 25000 target tokens").

use tessera_tensor::{IndexTensor, Rng};

use crate::{Error, Result};

/// Groups pairs of lengths `(source, target)` into batches of similar lengths whose
/// padded size `batch · (max source + max target)` stays within `max_tokens`, in a
/// seeded random order. Returns the indices of each batch. A pair longer than
/// `max_tokens` on its own is an error naming it.
///
/// ```
/// use tessera_data::token_batches;
/// use tessera_tensor::Rng;
/// let lengths = [(3, 4), (10, 9), (3, 3), (11, 10), (2, 3)];
/// let batches = token_batches(&lengths, 24, &mut Rng::seed(0))?;
/// let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
/// all.sort();
/// assert_eq!(all, vec![0, 1, 2, 3, 4]);
/// for b in &batches {
///     let s = b.iter().map(|&i| lengths[i].0).max().unwrap();
///     let t = b.iter().map(|&i| lengths[i].1).max().unwrap();
///     assert!(b.len() * (s + t) <= 24);
/// }
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn token_batches(
    lengths: &[(usize, usize)],
    max_tokens: usize,
    rng: &mut Rng,
) -> Result<Vec<Vec<usize>>> {
    if lengths.is_empty() {
        return Err(Error::Invalid {
            what: "token_batches",
            msg: "no sequence pairs".into(),
        });
    }
    if let Some((i, (s, t))) = lengths
        .iter()
        .enumerate()
        .find(|(_, (s, t))| s + t > max_tokens)
    {
        return Err(Error::Invalid {
            what: "token_batches",
            msg: format!("pair {i} has {s} + {t} tokens, more than the {max_tokens} of a batch"),
        });
    }
    // Sort by length with random tie-breaking, so equal-length pairs mix between epochs.
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    order.sort_by_key(|&i| (lengths[i].0, lengths[i].1));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let (mut max_s, mut max_t) = (0, 0);
    for i in order {
        let (s, t) = lengths[i];
        let (ns, nt) = (max_s.max(s), max_t.max(t));
        if !current.is_empty() && (current.len() + 1) * (ns + nt) > max_tokens {
            batches.push(std::mem::take(&mut current));
            (max_s, max_t) = (s, t);
        } else {
            (max_s, max_t) = (ns, nt);
        }
        current.push(i);
    }
    batches.push(current);
    rng.shuffle(&mut batches);
    Ok(batches)
}

/// Sequences padded to one length: `[B, max len]` ids, each row `prefix ++ seq ++
/// suffix` then `pad`.
///
/// ```
/// use tessera_data::pad_sequences;
/// let t = pad_sequences(&[&[5, 6][..], &[7][..]], &[1], &[2], 0)?;
/// assert_eq!(t.shape(), &[2, 4]);
/// assert_eq!(t.data(), &[1, 5, 6, 2, 1, 7, 2, 0]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn pad_sequences(
    seqs: &[&[usize]],
    prefix: &[usize],
    suffix: &[usize],
    pad: usize,
) -> Result<IndexTensor> {
    let width = seqs.iter().map(|s| s.len()).max().unwrap_or(0) + prefix.len() + suffix.len();
    let mut out = Vec::with_capacity(seqs.len() * width);
    for s in seqs {
        let start = out.len();
        out.extend_from_slice(prefix);
        out.extend_from_slice(s);
        out.extend_from_slice(suffix);
        out.resize(start + width, pad);
    }
    Ok(IndexTensor::new(out, &[seqs.len(), width])?)
}
