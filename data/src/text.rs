//! Character vocabularies and truncated-BPTT batching.

use std::collections::HashMap;

use tessera_tensor::IndexTensor;

use crate::{Error, Result};

/// The characters of a text, sorted, each mapped to its index (as char-rnn builds its
/// vocabulary: tinyshakespeare gives 65 characters, `'\n'` first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    index: HashMap<char, usize>,
}

impl CharVocab {
    /// The sorted distinct characters of `text`; an empty text is an error.
    pub fn from_text(text: &str) -> Result<CharVocab> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharVocab::from_chars(chars.into_iter().collect::<String>().as_str())
    }

    /// A vocabulary from its characters in index order (what [`CharVocab::as_string`]
    /// gives, for storing a vocabulary beside a model).
    pub fn from_chars(chars: &str) -> Result<CharVocab> {
        let chars: Vec<char> = chars.chars().collect();
        if chars.is_empty() {
            return Err(Error::Invalid {
                what: "CharVocab",
                msg: "a vocabulary needs at least one character; the text is empty".into(),
            });
        }
        let mut index = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if index.insert(c, i).is_some() {
                return Err(Error::Invalid {
                    what: "CharVocab",
                    msg: format!("character {c:?} appears twice"),
                });
            }
        }
        Ok(CharVocab { chars, index })
    }

    /// The characters in index order, as one string.
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The ids of `text`; a character outside the vocabulary is an error naming it and
    /// its position.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .enumerate()
            .map(|(pos, c)| {
                self.index.get(&c).copied().ok_or_else(|| Error::Invalid {
                    what: "CharVocab::encode",
                    msg: format!("character {c:?} at position {pos} is not in the vocabulary"),
                })
            })
            .collect()
    }

    /// The text of `ids`; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                self.chars.get(i).copied().ok_or_else(|| Error::Invalid {
                    what: "CharVocab::decode",
                    msg: format!("id {i} is outside a vocabulary of {}", self.chars.len()),
                })
            })
            .collect()
    }
}

/// The lines of a UTF-8 text file, gunzipped first when the name ends in `.gz`. Errors
/// name the file.
pub fn read_lines(path: impl AsRef<std::path::Path>) -> Result<Vec<String>> {
    use std::io::Read;
    let path = path.as_ref();
    let fail = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(fail)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .map_err(fail)?;
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// A small built-in text (nine of Shakespeare's sonnets, public domain) for demos and
/// for training runs on a machine without data.
///
/// ```
/// let vocab = tessera_data::CharVocab::from_text(tessera_data::SONNETS)?;
/// assert!(vocab.len() > 40);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub const SONNETS: &str = include_str!("sonnets.txt");

/// Splits a sequence at `fraction` of its length: the first part for training, the rest
/// for validation (the usual 90/10 split of tinyshakespeare is `split_fraction(ids, 0.9)`).
pub fn split_fraction<T>(items: &[T], fraction: f64) -> Result<(&[T], &[T])> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Invalid {
            what: "split_fraction",
            msg: format!("fraction {fraction} is outside [0, 1]"),
        });
    }
    let at = (items.len() as f64 * fraction) as usize;
    Ok(items.split_at(at))
}

/// One token stream cut into `batch` parallel streams and read `seq` steps at a time,
/// for truncated backpropagation through time (char-rnn's layout).
///
/// The ids are cut into `batch` contiguous streams of equal length; chunk `k` holds
/// steps `k·seq .. (k+1)·seq` of every stream, and its targets are the same positions
/// one step later. Consecutive chunks continue each stream, so a recurrent network's
/// state at the end of chunk `k` is the right start for chunk `k + 1`.
#[derive(Clone, Debug)]
pub struct BpttBatches {
    streams: Vec<Vec<usize>>,
    seq: usize,
}

impl BpttBatches {
    /// Cuts `ids` into `batch` streams read `seq` steps at a time. Errors when the ids
    /// are too few for one chunk (`batch · (seq + 1)` are needed).
    pub fn new(ids: &[usize], batch: usize, seq: usize) -> Result<BpttBatches> {
        if batch == 0 || seq == 0 {
            return Err(Error::Invalid {
                what: "BpttBatches",
                msg: format!("batch ({batch}) and sequence length ({seq}) must be positive"),
            });
        }
        let per_stream = ids.len() / batch;
        if per_stream < seq + 1 {
            return Err(Error::Invalid {
                what: "batches of text",
                msg: format!(
                    "{} tokens are too few: {batch} parallel streams get {per_stream} each, and \
                     one chunk of {seq} needs {}; give a longer text or a smaller batch or \
                     sequence length",
                    ids.len(),
                    seq + 1
                ),
            });
        }
        let streams = (0..batch)
            .map(|b| ids[b * per_stream..(b + 1) * per_stream].to_vec())
            .collect();
        Ok(BpttBatches { streams, seq })
    }

    /// Number of whole chunks (each stream's last id is only ever a target).
    pub fn num_chunks(&self) -> usize {
        (self.streams[0].len() - 1) / self.seq
    }

    /// Inputs and targets of chunk `k`, each `[batch, seq]`.
    pub fn chunk(&self, k: usize) -> Result<(IndexTensor, IndexTensor)> {
        if k >= self.num_chunks() {
            return Err(Error::Invalid {
                what: "BpttBatches::chunk",
                msg: format!("chunk {k} of {}", self.num_chunks()),
            });
        }
        let (b, t) = (self.streams.len(), self.seq);
        let mut x = Vec::with_capacity(b * t);
        let mut y = Vec::with_capacity(b * t);
        for s in &self.streams {
            x.extend_from_slice(&s[k * t..(k + 1) * t]);
            y.extend_from_slice(&s[k * t + 1..(k + 1) * t + 1]);
        }
        Ok((IndexTensor::new(x, &[b, t])?, IndexTensor::new(y, &[b, t])?))
    }
}

/// The built-in translation task: `n` sequences of 4 to 12 letters (`a` to `l`, separated
/// by spaces) and their reversal, drawn with `seed`.
///
/// ```
/// let pairs = tessera_data::reversal_pairs(3, 0);
/// for (src, tgt) in &pairs {
///     let reversed: Vec<&str> = src.split(' ').rev().collect();
///     assert_eq!(tgt, &reversed.join(" "));
/// }
/// ```
pub fn reversal_pairs(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = tessera_tensor::Rng::seed(seed);
    (0..n)
        .map(|_| {
            let len = 4 + rng.below(9);
            let words: Vec<String> = (0..len)
                .map(|_| ((b'a' + rng.below(12) as u8) as char).to_string())
                .collect();
            let rev: Vec<String> = words.iter().rev().cloned().collect();
            (words.join(" "), rev.join(" "))
        })
        .collect()
}

/// Parallel text: line `i` of `src` with line `i` of `tgt` (gzipped or not). Files of
/// different lengths, or empty ones, are an error naming them.
pub fn read_parallel(
    src: &std::path::Path,
    tgt: &std::path::Path,
) -> Result<Vec<(String, String)>> {
    let (s, t) = (read_lines(src)?, read_lines(tgt)?);
    if s.len() != t.len() || s.is_empty() {
        return Err(Error::Format {
            path: src.to_path_buf(),
            msg: format!(
                "{} lines, against {} in {}: parallel text needs equal, non-zero counts",
                s.len(),
                t.len(),
                tgt.display()
            ),
        });
    }
    Ok(s.into_iter().zip(t).collect())
}
