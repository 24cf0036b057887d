//! The character language model: it learns, it resumes exactly, it rejects bad input.

use std::collections::HashMap;

use tessera_data::{split_fraction, CharVocab, SONNETS};
use tessera_nn::Params;
use tessera_rnn::{evaluate, sample, Cell, CharLm, CharLmConfig, TrainConfig, TrainState};
use tessera_tensor::Rng;

fn ids() -> (CharVocab, Vec<usize>) {
    let vocab = CharVocab::from_text(SONNETS).unwrap();
    let ids = vocab.encode(SONNETS).unwrap();
    (vocab, ids)
}

fn config() -> TrainConfig {
    TrainConfig {
        batch: 8,
        seq: 16,
        lr: 5e-3,
        clip: 5.0,
    }
}

fn model(cell: Cell, vocab: usize, seed: u64) -> CharLm {
    let layers = if cell == Cell::Elman { 1 } else { 2 };
    CharLm::new(
        CharLmConfig {
            cell,
            vocab,
            hidden: 32,
            layers,
        },
        &mut Rng::seed(seed),
    )
    .unwrap()
}

/// A run of `cell` (seed `seed`) on the sonnets after `steps` steps, with its vocabulary
/// and the ids it trains on.
fn trained(cell: Cell, seed: u64, steps: usize) -> (CharVocab, Vec<usize>, TrainState) {
    let (vocab, ids) = ids();
    let mut run = TrainState::new(model(cell, vocab.len(), seed), &ids, config()).unwrap();
    for _ in 0..steps {
        run.step().unwrap();
    }
    (vocab, ids, run)
}

#[test]
fn training_lowers_the_validation_loss_for_every_cell() {
    let (vocab, ids) = ids();
    let (train, val) = split_fraction(&ids, 0.9).unwrap();
    for cell in [Cell::Elman, Cell::Rnn, Cell::Lstm, Cell::Gru] {
        let mut run = TrainState::new(model(cell, vocab.len(), 1), train, config()).unwrap();
        let before = evaluate(&run.model, val, 4, 16).unwrap();
        assert!(
            (before - (vocab.len() as f32).ln()).abs() < 0.3,
            "{cell:?}: untrained loss {before}"
        );
        for _ in 0..150 {
            run.step().unwrap();
        }
        let after = evaluate(&run.model, val, 4, 16).unwrap();
        assert!(
            after < before - 0.6,
            "{cell:?}: validation loss {before} -> {after}"
        );
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let (vocab, ids) = ids();
    let dir = tempfile::tempdir().unwrap();
    for cell in [Cell::Elman, Cell::Lstm] {
        // 50 steps cross the end of the data (43 chunks), so the reset is covered too.
        let mut straight = TrainState::new(model(cell, vocab.len(), 2), &ids, config()).unwrap();
        assert!(straight.chunks_per_epoch() < 50);
        for _ in 0..50 {
            straight.step().unwrap();
        }
        let mut first = TrainState::new(model(cell, vocab.len(), 2), &ids, config()).unwrap();
        for _ in 0..27 {
            first.step().unwrap();
        }
        let path = dir.path().join(format!("{}.safetensors", cell.name()));
        first.save(&path, &HashMap::new()).unwrap();
        drop(first);
        let (mut resumed, _) = TrainState::resume(&path, &ids).unwrap();
        assert_eq!(resumed.step, 27);
        for _ in 27..50 {
            resumed.step().unwrap();
        }
        let what = format!("{cell:?} after resuming");
        let (a, b) = (
            straight.model.vars().tensors(),
            resumed.model.vars().tensors(),
        );
        tessera_testutil::assert_same_tensors(&what, &a, &b);
    }
}

#[test]
fn sampling_follows_the_prompt_and_the_temperature() {
    let (vocab, _, run) = trained(Cell::Lstm, 3, 100);
    let prompt = vocab.encode("Shall I ").unwrap();
    let greedy = sample(&run.model, &prompt, 40, 0.0, &mut Rng::seed(1)).unwrap();
    let again = sample(&run.model, &prompt, 40, 0.0, &mut Rng::seed(2)).unwrap();
    assert_eq!(greedy, again, "temperature 0 is greedy, whatever the seed");
    let hot = sample(&run.model, &prompt, 40, 1.0, &mut Rng::seed(1)).unwrap();
    let hot2 = sample(&run.model, &prompt, 40, 1.0, &mut Rng::seed(2)).unwrap();
    assert_ne!(hot, hot2, "different seeds draw different text");
    assert_eq!(hot.len(), 40);
    assert!(sample(&run.model, &[], 10, 1.0, &mut Rng::seed(1)).is_err());
    assert!(sample(&run.model, &prompt, 10, f32::NAN, &mut Rng::seed(1)).is_err());
}

#[test]
fn checkpoints_of_other_files_are_rejected_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = tessera_testutil::zeros_file(dir.path(), "other.safetensors", "x", &[2]);
    let err = CharLm::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("other.safetensors") && err.contains("not a character language model"),
        "{err}"
    );
    // A truncated checkpoint is an error, not a panic.
    let (_, ids, run) = trained(Cell::Elman, 4, 0);
    let good = dir.path().join("good.safetensors");
    run.save(&good, &HashMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(TrainState::resume(&cut, &ids).is_err());
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn tinyshakespeare_has_65_characters_and_a_90_10_split() {
    let path = tessera_testutil::shared_data("tinyshakespeare/input.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let vocab = CharVocab::from_text(&text).unwrap();
    assert_eq!(vocab.len(), 65);
    let ids = vocab.encode(&text).unwrap();
    let (train, val) = split_fraction(&ids, 0.9).unwrap();
    assert_eq!(train.len() + val.len(), 1_115_394);
    // An untrained model is near ln 65 nats per character on the validation text.
    let lm = model(Cell::Elman, 65, 5);
    let loss = evaluate(&lm, &val[..20_000], 16, 64).unwrap();
    assert!((loss - 65f32.ln()).abs() < 0.2, "{loss}");
}

#[test]
fn checkpoints_of_the_earlier_layout_fail_with_a_clear_message_and_write_nothing() {
    // tests/fixtures/legacy_charlm.safetensors is a training checkpoint in the earlier
    // layout (settings as separate metadata entries, counters as f32 halves), written by
    // testutil/scripts/make_legacy_checkpoints.py.
    let fixture = tessera_testutil::fixture_path!("legacy_charlm.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = tessera_testutil::copy_into(fixture, dir.path(), "checkpoint.safetensors");
    let err = CharLm::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("earlier version"),
        "{err}"
    );
    let err = TrainState::resume(&path, &[0; 100])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("earlier version"),
        "{err}"
    );
    tessera_testutil::assert_untouched_and_alone(&path, &before);
}

#[test]
fn a_checkpoint_keeps_one_config_and_one_train_state_entry() {
    let (vocab, ids, run) = trained(Cell::Gru, 6, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let extras = HashMap::from([("vocab".to_string(), vocab.as_string())]);
    run.save(&path, &extras).unwrap();
    let file = tessera_tensor::SafeTensorsFile::open(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["config", "model", "train_state", "vocab"]);
    assert_eq!(meta["model"], "tessera-rnn/charlm");
    let config: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(config["cell"], "gru");
    assert_eq!(config["train"]["seq"], 16);
    assert_eq!(meta["train_state"], r#"{"step":3,"epoch":0,"position":3}"#);
    assert!(!file
        .names()
        .iter()
        .any(|n| n == "train.step" || n == "train.chunk"));
    // A model file is not a training checkpoint.
    let model_only = dir.path().join("model.safetensors");
    run.model
        .save(&model_only, &Default::default(), &HashMap::new())
        .unwrap();
    let (loaded, extra, _) = CharLm::load(&model_only).unwrap();
    assert!(extra.is_empty());
    assert_eq!(loaded.config(), run.model.config());
    let err = TrainState::resume(&model_only, &ids)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a training checkpoint"), "{err}");
}

#[test]
fn a_clip_of_zero_means_no_clipping_and_a_new_rate_applies() {
    let (vocab, ids) = ids();
    let values = |run: &TrainState| -> Vec<Vec<f32>> {
        let params = run.model.named_parameters();
        params.iter().map(|(_, p)| p.value().to_vec()).collect()
    };
    // The same first step with clip 0 and with a clip no gradient reaches: equal.
    let step = |clip: f32| {
        let config = TrainConfig { clip, ..config() };
        let mut run = TrainState::new(model(Cell::Elman, vocab.len(), 3), &ids, config).unwrap();
        let before = values(&run);
        run.step().unwrap();
        (before, values(&run))
    };
    let (before, off) = step(0.0);
    let (_, huge) = step(1e9);
    assert_ne!(before, off, "clip 0 must not freeze the parameters");
    assert_eq!(off, huge);

    let mut run = TrainState::new(model(Cell::Elman, vocab.len(), 3), &ids, config()).unwrap();
    run.set_lr(0.0);
    let before = values(&run);
    run.step().unwrap();
    assert_eq!(before, values(&run), "a rate of 0 changes nothing");
    assert_eq!(run.config.lr, 0.0);
}

/// Found by `tessera-fuzz` (`--parser model-load`): a `config` entry asking for a hidden
/// size of 2^40 made `CharLm::load` build the model before comparing it with the file;
/// now it is an error naming the file, before anything is allocated.
#[test]
fn a_configuration_larger_than_its_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = CharLmConfig {
        cell: Cell::Gru,
        vocab: 5,
        hidden: 3,
        layers: 1,
    };
    let lm = CharLm::new(config, &mut Rng::seed(0)).unwrap();
    let path = dir.path().join("lm.safetensors");
    lm.save(&path, &Default::default(), &HashMap::new())
        .unwrap();
    let huge = CharLmConfig {
        hidden: 1 << 40,
        ..config
    };
    let edited = dir.path().join("edited.safetensors");
    tessera_testutil::rewrite_metadata(&path, &edited, |meta| {
        meta.insert("config".into(), serde_json::to_string(&huge).unwrap());
    });
    let err = CharLm::load(&edited).unwrap_err().to_string();
    assert!(
        err.contains("edited.safetensors") && err.contains("larger than the file"),
        "{err}"
    );
    assert!(CharLm::load(&path).is_ok());
}
