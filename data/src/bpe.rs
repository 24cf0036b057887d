//! A byte-level BPE subword vocabulary (GPT-2's scheme), trained on a corpus with the
//! `tokenizers` crate and stored as its JSON, so it travels inside a checkpoint.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::{Error, Result};

/// The special tokens, with fixed ids 0..3.
pub const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<unk>"];

/// A trained byte-level BPE vocabulary: any UTF-8 text encodes (bytes are the base
/// alphabet, so nothing is unknown) and decodes back exactly.
///
/// ```
/// use tessera_data::Bpe;
/// let corpus = ["the cat sat on the mat", "the dog sat on the log"];
/// let bpe = Bpe::train(corpus.iter().copied(), 300, 1)?;
/// let ids = bpe.encode("the cat sat on the log")?;
/// assert_eq!(bpe.decode(&ids)?, "the cat sat on the log");
/// assert_eq!((bpe.pad(), bpe.bos(), bpe.eos()), (0, 1, 2));
/// # Ok::<(), tessera_data::Error>(())
/// ```
#[derive(Clone)]
pub struct Bpe {
    tokenizer: Tokenizer,
    /// The number of tokens, counted once: `tokenizers` counts them by copying the
    /// whole vocabulary into a new map on every call.
    len: usize,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bpe({} tokens)", self.len())
    }
}

fn bpe_err(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what,
        msg: e.to_string(),
    }
}

/// The entries of a vocabulary's JSON that [`Bpe::from_json`] checks before `tokenizers`
/// reads it: added tokens other than the [`SPECIALS`], and a subword prefix or suffix
/// (byte-level BPE has neither).
fn check_json(value: &serde_json::Value) -> Result<()> {
    let fail = |msg: String| bpe_err("Bpe::from_json", msg);
    for token in value["added_tokens"].as_array().into_iter().flatten() {
        let content = &token["content"];
        if !content.as_str().is_some_and(|c| SPECIALS.contains(&c)) {
            let shown: String = content.to_string().chars().take(40).collect();
            return Err(fail(format!(
                "added token {shown}: expected only the special tokens {}",
                SPECIALS.join(", ")
            )));
        }
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        let v = &value["model"][key];
        if !(v.is_null() || v.as_str() == Some("")) {
            return Err(fail(format!(
                "model.{key} is {v}: expected none (byte-level BPE marks no subwords)"
            )));
        }
    }
    Ok(())
}

impl Bpe {
    /// Learns merges on `texts` until the vocabulary has `vocab_size` tokens (the 256
    /// byte symbols and the [`SPECIALS`] included), keeping pairs seen at least
    /// `min_frequency` times.
    pub fn train<'a>(
        texts: impl Iterator<Item = &'a str> + Send,
        vocab_size: usize,
        min_frequency: u64,
    ) -> Result<Bpe> {
        if vocab_size < 256 + SPECIALS.len() {
            return Err(Error::Invalid {
                what: "Bpe::train",
                msg: format!(
                    "a vocabulary of {vocab_size} is below the 260 byte and special tokens"
                ),
            });
        }
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(
                SPECIALS
                    .iter()
                    .map(|s| AddedToken::from(*s, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tokenizer = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            PostProcessorWrapper,
            ByteLevelDecoder,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
        .map_err(|e| bpe_err("Bpe::train", e))?;
        tokenizer
            .train(&mut trainer, texts)
            .map_err(|e| bpe_err("Bpe::train", e))?;
        Bpe::checked(tokenizer.into())
    }

    /// A vocabulary whose special tokens have their fixed ids, and which encodes the
    /// text `<eos>` (any special token's text) as ordinary bytes, so that no input
    /// text can smuggle a special id in and every text decodes back to itself.
    fn checked(mut tokenizer: Tokenizer) -> Result<Bpe> {
        tokenizer.set_encode_special_tokens(true);
        let vocab = tokenizer.get_vocab(true);
        let len = vocab.len();
        // Ids index the model's embeddings: they must lie in 0..len.
        if let Some((token, id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if *id as usize >= len {
                return Err(Error::Invalid {
                    what: "Bpe",
                    msg: format!(
                        "token {token:?} has id {id}, outside the {len} tokens (ids run from 0 to {})",
                        len - 1
                    ),
                });
            }
        }
        let bpe = Bpe { tokenizer, len };
        bpe.check_specials()?;
        Ok(bpe)
    }

    fn check_specials(&self) -> Result<()> {
        for (i, s) in SPECIALS.iter().enumerate() {
            if self.tokenizer.token_to_id(s) != Some(i as u32) {
                return Err(Error::Invalid {
                    what: "Bpe",
                    msg: format!(
                        "special token {s} should have id {i}, has {:?}",
                        self.tokenizer.token_to_id(s)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The vocabulary as the `tokenizers` JSON (what [`Bpe::from_json`] reads).
    pub fn to_json(&self) -> Result<String> {
        self.tokenizer
            .to_string(false)
            .map_err(|e| bpe_err("Bpe::to_json", e))
    }

    /// A vocabulary from its JSON (as [`Bpe::to_json`] writes it: its only added tokens
    /// are the [`SPECIALS`], and its model has no subword prefix or suffix).
    pub fn from_json(json: &str) -> Result<Bpe> {
        // The syntax and the entries `tokenizers` trusts are checked first: it panics on
        // a syntax error inside its `decoder` entry and on a `continuing_subword_prefix`
        // longer than a merged token, and an added token thousands of characters long
        // takes it seconds to compile into its matcher.
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| bpe_err("Bpe::from_json", format!("not JSON: {e}")))?;
        check_json(&value)?;
        let tokenizer: Tokenizer = json.parse().map_err(|e| bpe_err("Bpe::from_json", e))?;
        Bpe::checked(tokenizer)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vocabulary is empty (never, once trained).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| bpe_err("Bpe::encode", e))?;
        Ok(enc.get_ids().iter().map(|&i| i as usize).collect())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Invalid {
                what: "Bpe::decode",
                msg: format!("id {bad} is outside the {} tokens", self.len()),
            });
        }
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| bpe_err("Bpe::decode", e))
    }

    /// The padding id (0).
    pub fn pad(&self) -> usize {
        0
    }

    /// The begin-of-sequence id (1).
    pub fn bos(&self) -> usize {
        1
    }

    /// The end-of-sequence id (2).
    pub fn eos(&self) -> usize {
        2
    }
}
