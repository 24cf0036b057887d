//! Drivers of text: the BPE vocabulary's JSON, the character vocabulary, TOML run
//! configurations, and the text given to `translate` and `sample`.

use std::collections::HashMap;
use std::path::Path;

use tessera_data::{Bpe, BpttBatches, CharVocab};
use tessera_tensor::Rng;

use super::{err, Json};
use crate::input::{Input, Kind, Seed};
use crate::seeds::{self, msg, Made};
use crate::Driver;

/// The `bpe` driver: a vocabulary's JSON, read by `run_bpe`.
pub fn bpe() -> Made<Box<dyn Driver>> {
    let json = seeds::bpe()?.to_json().map_err(msg)?;
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&json).map_err(msg)?,
    )
    .map_err(msg)?;
    Ok(Box::new(Json {
        seeds: vec![
            Seed::one(
                "trained on the sonnets, 300 tokens",
                json.into_bytes(),
                Kind::Text,
            ),
            Seed::one("the same, pretty-printed", pretty.into_bytes(), Kind::Text),
        ],
        run: run_bpe,
    }))
}

/// A vocabulary's JSON: [`Bpe::from_json`] as `translate` reads it from a checkpoint.
fn run_bpe(input: &Input) -> Result<(), String> {
    let json = input.text(0);
    let meta = HashMap::from([(tessera_transformer::BPE_KEY.to_string(), json.clone())]);
    let _ = tessera_transformer::read_bpe(&meta, "checkpoint.safetensors");
    let bpe = Bpe::from_json(&json).map_err(err)?;
    let n = bpe.len();
    for text in ["the cat sat", "", "é 🦀 \u{0}", "<eos> <pad>"] {
        let ids = bpe.encode(text).map_err(err)?;
        assert!(ids.iter().all(|&i| i < n), "id out of the {n} tokens");
        let _ = bpe.decode(&ids);
    }
    assert!(bpe.decode(&[n]).is_err());
    let _ = bpe.decode(&[0, 1, 2, 3, n - 1]);
    Ok(())
}

/// Text as a character vocabulary, and encoded with one.
struct Chars {
    seeds: Vec<Seed>,
    sonnets: CharVocab,
}

/// The `char-vocab` driver.
pub fn char_vocab() -> Made<Box<dyn Driver>> {
    Ok(Box::new(Chars {
        seeds: seeds::text_seeds(),
        sonnets: CharVocab::from_text(tessera_data::SONNETS).map_err(msg)?,
    }))
}

impl Driver for Chars {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn run(&self, input: &Input, _: &Path) -> Result<(), String> {
        let text = input.text(0);
        let _ = self.sonnets.encode(&text);
        let meta = HashMap::from([(tessera_rnn::VOCAB_KEY.to_string(), text.clone())]);
        let _ = tessera_rnn::read_vocab(&meta, "checkpoint.safetensors");
        let _ = CharVocab::from_chars(&text);
        let vocab = CharVocab::from_text(&text).map_err(err)?;
        assert!(CharVocab::from_chars(&vocab.as_string()).ok().as_ref() == Some(&vocab));
        let ids = vocab.encode(&text).map_err(err)?;
        assert_eq!(
            vocab.decode(&ids).map_err(err)?,
            text,
            "decode(encode(text))"
        );
        assert!(vocab.decode(&[vocab.len()]).is_err());
        let batch = 1 + ids.len() % 3;
        if let Ok(b) = BpttBatches::new(&ids, batch, 1 + ids.len() % 5) {
            for k in 0..b.num_chunks().min(4) {
                b.chunk(k).map_err(err)?;
            }
            assert!(b.chunk(b.num_chunks()).is_err());
        }
        let _ = tessera_data::split_fraction(&ids, 0.9);
        Ok(())
    }
}

/// A run configuration: the TOML `--config` reads, into the command's flag table and
/// into the public configuration types.
struct TomlConfig {
    seeds: Vec<Seed>,
}

/// The `toml-config` driver; its seeds are a configuration as the command writes it
/// and the configuration types serialised as TOML.
pub fn toml_config() -> Made<Box<dyn Driver>> {
    // What `tessera vit train --config` reads and the command writes beside a run.
    let cli = "# The effective configuration of this run: `--config` reads it back.\n\
               batch = 64\ncrop_padding = 4\ndata = \"shapes\"\ndepth = 6\neval_every = 200\n\
               flip = true\nlr = 0.001\nminutes = 1.5\nout = \"runs/vit\"\npatch = 4\n\
               quiet = false\nseed = 0\nsteps = 2000\nthreads = 2\nwarmup = 100\n";
    let vit = tessera_vit::VitConfig::vit_tiny_patch16_224();
    let transformer = tessera_transformer::TransformerConfig::base(37_000);
    let lm = tessera_rnn::CharLmConfig {
        cell: tessera_rnn::Cell::Lstm,
        vocab: 65,
        hidden: 128,
        layers: 2,
    };
    let text = |v: Result<String, toml::ser::Error>| v.map(String::into_bytes).map_err(msg);
    Ok(Box::new(TomlConfig {
        seeds: vec![
            Seed::one(
                "tessera vit train config.toml",
                cli.as_bytes().to_vec(),
                Kind::Text,
            ),
            Seed::one("VitConfig", text(toml::to_string(&vit))?, Kind::Text),
            Seed::one(
                "TransformerConfig",
                text(toml::to_string(&transformer))?,
                Kind::Text,
            ),
            Seed::one("CharLmConfig", text(toml::to_string(&lm))?, Kind::Text),
            Seed::one(
                "vit TrainConfig",
                text(toml::to_string(&tessera_vit::TrainConfig::default()))?,
                Kind::Text,
            ),
        ],
    }))
}

/// The command's own conversion of a `--config` table into flags.
#[path = "../../../cli/src/toml_flags.rs"]
mod toml_flags;
use toml_flags::flags;

impl Driver for TomlConfig {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn run(&self, input: &Input, _: &Path) -> Result<(), String> {
        let text = input.text(0);
        let ok = |r: Result<(), String>| r.is_ok();
        let typed = [
            ok(toml::from_str::<tessera_vit::VitConfig>(&text)
                .map_err(err)
                .and_then(|c| c.validate().map_err(err))),
            ok(toml::from_str::<tessera_vit::TrainConfig>(&text)
                .map(|_| ())
                .map_err(err)),
            ok(
                toml::from_str::<tessera_transformer::TransformerConfig>(&text)
                    .map_err(err)
                    .and_then(|c| c.validate().map_err(err)),
            ),
            ok(toml::from_str::<tessera_transformer::TrainConfig>(&text)
                .map(|_| ())
                .map_err(err)),
            ok(toml::from_str::<tessera_rnn::CharLmConfig>(&text)
                .map(|_| ())
                .map_err(err)),
            ok(toml::from_str::<tessera_rnn::TrainConfig>(&text)
                .map(|_| ())
                .map_err(err)),
        ];
        let table: toml::Table = text.parse().map_err(err)?;
        let again = toml::to_string(&table).map_err(err)?;
        let back: toml::Table = again.parse().map_err(|e| format!("reparsing: {e}"))?;
        assert_eq!(
            back.len(),
            table.len(),
            "a table survives writing and reading"
        );
        flags(table)?;
        let _ = typed;
        Ok(())
    }
}

/// Text to translate and sample: a trained BPE vocabulary and a tiny Transformer, the
/// sonnets' character vocabulary and a tiny character LM.
struct TextInput {
    seeds: Vec<Seed>,
    bpe: Bpe,
    model: tessera_transformer::Transformer,
    vocab: CharVocab,
    lm: tessera_rnn::CharLm,
}

/// The `text-input` driver.
pub fn text_input() -> Made<Box<dyn Driver>> {
    let bpe = seeds::bpe()?;
    let config = tessera_transformer::TransformerConfig {
        max_len: 12,
        ..tessera_transformer::TransformerConfig::small(bpe.len(), 8, 2, 16, 1)
    };
    let model = tessera_transformer::Transformer::new(config, &mut Rng::seed(0)).map_err(msg)?;
    let vocab = CharVocab::from_text(tessera_data::SONNETS).map_err(msg)?;
    let lm_config = tessera_rnn::CharLmConfig {
        cell: tessera_rnn::Cell::Gru,
        vocab: vocab.len(),
        hidden: 8,
        layers: 1,
    };
    let lm = tessera_rnn::CharLm::new(lm_config, &mut Rng::seed(0)).map_err(msg)?;
    let seeds = seeds::text_seeds();
    Ok(Box::new(TextInput {
        seeds,
        bpe,
        model,
        vocab,
        lm,
    }))
}

impl Driver for TextInput {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn run(&self, input: &Input, _: &Path) -> Result<(), String> {
        let line = input.text(0);
        let ids = self.bpe.encode(&line).map_err(err)?;
        assert_eq!(
            self.bpe.decode(&ids).map_err(err)?,
            line,
            "BPE decode(encode(line))"
        );
        let pairs = [(line.clone(), String::new())];
        let max_len = self.model.config().max_len;
        tessera_transformer::Corpus::encode(&self.bpe, &pairs, max_len).map_err(err)?;
        let beam = 1 + line.len() % 2;
        self.model
            .translate(&self.bpe, &line, beam, 0.6)
            .map_err(err)?;
        let _ = tessera_transformer::tokenize_13a(&line);
        tessera_transformer::corpus_bleu(&[&line], &[&line]).map_err(err)?;
        // `tessera rnn sample --prompt`: the prompt through the model's vocabulary.
        let prompt = self.vocab.encode(&line).map_err(err)?;
        let out = tessera_rnn::sample(&self.lm, &prompt, 4, 0.8, &mut Rng::seed(0)).map_err(err)?;
        self.vocab.decode(&out).map_err(err)?;
        Ok(())
    }
}
