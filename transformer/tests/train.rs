//! Training runs: a stopped and resumed run equals an uninterrupted one; checkpoint
//! averaging takes the element-wise mean; bad checkpoints are errors.

use std::collections::HashMap;

use tessera_nn::Params;
use tessera_tensor::Rng;
use tessera_transformer::{
    average_checkpoints, evaluate_loss, load_model, read_config, Corpus, TrainConfig, Trainer,
    Transformer, TransformerConfig,
};

/// Copy pairs of 3..8 symbols (ids 4..15); 0 pad, 1 bos, 2 eos.
fn corpus(n: usize, seed: u64) -> Corpus {
    let mut rng = Rng::seed(seed);
    let pairs = (0..n)
        .map(|_| {
            let len = 3 + rng.below(6);
            let s: Vec<usize> = (0..len).map(|_| 4 + rng.below(12)).collect();
            (s.clone(), s)
        })
        .collect();
    Corpus {
        pairs,
        bos: 1,
        eos: 2,
        pad: 0,
    }
}

fn model(seed: u64) -> Transformer {
    let mut c = TransformerConfig::small(16, 16, 2, 32, 1);
    c.max_len = 16;
    c.dropout = 0.1;
    Transformer::new(c, &mut Rng::seed(seed)).unwrap()
}

fn config() -> TrainConfig {
    TrainConfig {
        max_tokens: 120,
        warmup: 20,
        lr_factor: 1.0,
        seed: 3,
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(60, 1);
    let mut straight = Trainer::new(model(5), data.clone(), config()).unwrap();
    let per_epoch = straight.batches_per_epoch();
    // Cross an epoch boundary, where the batches are reshuffled.
    let total = per_epoch as u64 + 5;
    for _ in 0..total {
        straight.step().unwrap();
    }
    let mut first = Trainer::new(model(5), data.clone(), config()).unwrap();
    for _ in 0..per_epoch as u64 - 2 {
        first.step().unwrap();
    }
    let path = dir.path().join("run.safetensors");
    first.save(&path, &HashMap::new()).unwrap();
    drop(first);
    let (mut resumed, _) = Trainer::resume(&path, data).unwrap();
    while resumed.step < total {
        resumed.step().unwrap();
    }
    assert_eq!(resumed.epoch, 1);
    let (a, b) = (
        straight.model.vars().tensors(),
        resumed.model.vars().tensors(),
    );
    tessera_testutil::assert_same_tensors("after resuming", &a, &b);
}

#[test]
fn training_lowers_the_loss_and_averaging_takes_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(200, 2);
    let held_out = corpus(40, 9);
    let mut run = Trainer::new(model(6), data, config()).unwrap();
    let before = evaluate_loss(&run.model, &held_out, 400).unwrap();
    let mut paths = Vec::new();
    for k in 0..3 {
        for _ in 0..60 {
            run.step().unwrap();
        }
        let p = dir.path().join(format!("ckpt{k}.safetensors"));
        run.save(&p, &HashMap::new()).unwrap();
        paths.push(p);
    }
    let after = evaluate_loss(&run.model, &held_out, 400).unwrap();
    assert!(after < before - 0.5, "held-out loss {before} -> {after}");
    let averaged = model(0);
    average_checkpoints(&averaged, &paths).unwrap();
    let loaded: Vec<Transformer> = paths.iter().map(|p| load_model(p).unwrap().0).collect();
    for (i, (name, p)) in averaged.named_parameters().iter().enumerate() {
        let parts: Vec<Vec<f32>> = loaded
            .iter()
            .map(|m| m.named_parameters()[i].1.value().to_vec())
            .collect();
        for (j, v) in p.value().to_vec().iter().enumerate() {
            let mean = parts.iter().map(|x| f64::from(x[j])).sum::<f64>() / 3.0;
            assert!((f64::from(*v) - mean).abs() < 1e-6, "{name}[{j}]");
        }
    }
}

#[test]
fn checkpoints_of_other_models_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = tessera_testutil::zeros_file(dir.path(), "x.safetensors", "w", &[1]);
    let err = load_model(&path).err().unwrap().to_string();
    assert!(
        err.contains("x.safetensors") && err.contains("not a Transformer checkpoint"),
        "{err}"
    );
    assert!(Trainer::resume(&path, corpus(5, 1)).is_err());
}

#[test]
fn a_training_checkpoint_holds_one_config_and_one_train_state_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Trainer::new(model(5), corpus(30, 1), config()).unwrap();
    for _ in 0..3 {
        run.step().unwrap();
    }
    let path = dir.path().join("run.safetensors");
    let extra = HashMap::from([("data".to_string(), "copy pairs".to_string())]);
    run.save(&path, &extra).unwrap();
    let meta = tessera_tensor::SafeTensorsFile::open(&path)
        .unwrap()
        .metadata()
        .unwrap();
    let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["config", "data", "model", "train_state"]);
    assert_eq!(meta["model"], "tessera-transformer");
    let (saved, _) = read_config(&path).unwrap();
    assert_eq!(saved.model, *run.model.config());
    assert_eq!(saved.train, Some(config()));
    let state: serde_json::Value = serde_json::from_str(&meta["train_state"]).unwrap();
    assert_eq!(state["step"], 3);
    assert!(state["rng"]["key"].is_array(), "{state}");
    // The optimizer's state travels as tensors; the model loads without it.
    let (loaded, _) = load_model(&path).unwrap();
    assert_eq!(loaded.num_parameters(), run.model.num_parameters());
}

#[test]
fn a_checkpoint_of_the_earlier_layout_is_refused_with_a_clear_message() {
    // testutil/scripts/make_legacy_checkpoints.py: the metadata of the earlier
    // TransformerConfig::to_metadata and Trainer::save, and the step counter in f32 halves.
    let fixture = tessera_testutil::fixture_path!("legacy_checkpoint.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = tessera_testutil::copy_into(fixture, dir.path(), "old.safetensors");
    let errors = [
        load_model(&path).err().unwrap().to_string(),
        Trainer::resume(&path, corpus(5, 1))
            .err()
            .unwrap()
            .to_string(),
        read_config(&path).err().unwrap().to_string(),
    ];
    for err in errors {
        assert!(
            err.contains("old.safetensors") && err.contains("written by an earlier version"),
            "{err}"
        );
    }
    tessera_testutil::assert_untouched_and_alone(&path, &before);
}
