//! Checkpoints read from untrusted files: a configuration that describes a model larger
//! than its file is an error before anything is allocated for it (found by
//! `tessera-fuzz`, `--parser model-load --seed 0 --case 8191`).

use std::collections::HashMap;

use tessera_tensor::Rng;
use tessera_transformer::{load_model, CheckpointConfig, Transformer, TransformerConfig};

/// A tiny model's checkpoint with its `config` entry changed by `edit`.
fn checkpoint_with(
    dir: &std::path::Path,
    edit: impl Fn(&mut TransformerConfig),
) -> std::path::PathBuf {
    let config = TransformerConfig {
        max_len: 8,
        ..TransformerConfig::small(12, 4, 2, 8, 1)
    };
    let model = Transformer::new(config, &mut Rng::seed(0)).unwrap();
    let path = dir.join("model.safetensors");
    model.save(&path, &HashMap::new()).unwrap();
    let edited = dir.join("edited.safetensors");
    tessera_testutil::rewrite_metadata(&path, &edited, |meta| {
        let mut stored: CheckpointConfig = serde_json::from_str(&meta["config"]).unwrap();
        edit(&mut stored.model);
        meta.insert("config".into(), serde_json::to_string(&stored).unwrap());
    });
    edited
}

#[test]
fn a_configuration_larger_than_its_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // max_len 2^32 asked for a 64 GiB sinusoid table (the process aborted).
    let path = checkpoint_with(dir.path(), |c| c.max_len = 1 << 32);
    let err = load_model(&path).unwrap_err().to_string();
    assert!(
        err.contains("sinusoid table of shape [4294967296, 4]"),
        "{err}"
    );
    assert!(
        err.contains("edited.safetensors") && err.contains("larger than the file"),
        "{err}"
    );
    // A width of 2^20 asks for a 12 × 2^20 embedding, then 2^40-value projections.
    let path = checkpoint_with(dir.path(), |c| {
        c.d_model = 1 << 20;
        (c.d_k, c.d_v) = (1 << 19, 1 << 19);
    });
    let err = load_model(&path).unwrap_err().to_string();
    assert!(err.contains("does not fit in the"), "{err}");
    // The unedited model still loads.
    let path = checkpoint_with(dir.path(), |_| {});
    assert_eq!(load_model(&path).unwrap().0.config().max_len, 8);
}
