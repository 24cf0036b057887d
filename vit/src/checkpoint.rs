//! Checkpoints: the parameters and buffers by name as safetensors, with three metadata
//! entries besides the caller's: `model` (the kind, [`MODEL_KIND`]), `config` (one JSON
//! [`CheckpointConfig`]) and, in a training checkpoint, `train_state` (one JSON
//! [`TrainProgress`]). A training checkpoint also holds the optimizer's state as
//! `optim.*` tensors.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_nn::{
    get_json, put_json, Params, TrainProgress, VarBuilder, VarMap, CONFIG_KEY, TRAIN_STATE_KEY,
};
use tessera_tensor::SafeTensorsFile;

use crate::{Result, TrainConfig, VisionTransformer, VitConfig};

/// The `model` metadata entry of every Vision Transformer checkpoint.
pub const MODEL_KIND: &str = "tessera-vit";

/// The metadata key of the kind of model.
pub(crate) const KIND_KEY: &str = "model";

/// The `config` entry of a checkpoint: the model's configuration, and the training
/// settings in a training checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// The model.
    pub model: VitConfig,
    /// The training run's settings (training checkpoints only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
}

/// The metadata of a checkpoint: the caller's `extra` entries, then the kind, the
/// configuration and the training progress (which win over `extra` entries of the same
/// keys).
pub(crate) fn metadata(
    config: &CheckpointConfig,
    progress: Option<&TrainProgress>,
    extra: &HashMap<String, String>,
) -> Result<HashMap<String, String>> {
    let mut meta = extra.clone();
    meta.insert(KIND_KEY.to_string(), MODEL_KIND.to_string());
    put_json(&mut meta, CONFIG_KEY, config)?;
    if let Some(p) = progress {
        put_json(&mut meta, TRAIN_STATE_KEY, p)?;
    }
    Ok(meta)
}

/// The metadata and configuration of the checkpoint `path`; files of other models, of
/// an earlier version of tessera, and files without a configuration are errors naming
/// the file and the entry. Reads no tensor.
pub(crate) fn read_config(
    path: &Path,
) -> Result<(SafeTensorsFile, HashMap<String, String>, CheckpointConfig)> {
    let file = SafeTensorsFile::open(path)?;
    let meta = file.metadata()?;
    let kind = meta.get(KIND_KEY).map(String::as_str);
    if kind != Some(MODEL_KIND) {
        return Err(tessera_nn::Error::Metadata {
            path: path.to_path_buf(),
            key: KIND_KEY.to_string(),
            reason: match kind {
                Some(k) => format!("{k:?}: not a Vision Transformer checkpoint ({MODEL_KIND:?})"),
                None => "missing: not a Vision Transformer checkpoint".to_string(),
            },
        }
        .into());
    }
    let config: CheckpointConfig = get_json(&meta, CONFIG_KEY, path)?;
    config.model.validate()?;
    Ok((file, meta, config))
}

/// Fills `vars` from `path`. Every parameter and buffer must be there with its shape;
/// the only other tensors allowed are the optimizer's (`optim.*`).
pub(crate) fn load_weights(vars: &VarMap, path: &Path) -> Result<()> {
    let mut report = vars.load(path, false)?;
    report
        .unexpected
        .retain(|k| !k.starts_with(tessera_optim::STATE_PREFIX));
    if !report.is_clean() {
        return Err(tessera_nn::Error::Checkpoint {
            path: path.to_path_buf(),
            report,
        }
        .into());
    }
    Ok(())
}

/// Writes a model alone (parameters and buffers; `model`, `config` and the caller's
/// `extra` entries as metadata) atomically.
pub fn save_model(
    model: &VisionTransformer,
    path: impl AsRef<Path>,
    extra: &HashMap<String, String>,
) -> Result<()> {
    let config = CheckpointConfig {
        model: *model.config(),
        train: None,
    };
    let meta = metadata(&config, None, extra)?;
    model.vars().save(path, Some(&meta))?;
    Ok(())
}

/// A model from a file written by [`save_model`] or [`crate::Trainer::save`], and the
/// file's metadata. The model is built without random draws, then loaded. Missing
/// tensors, wrong shapes, files of other models and files of an earlier version are
/// errors naming the file.
///
/// ```
/// use std::collections::HashMap;
/// use tessera_nn::Params;
/// use tessera_tensor::Rng;
/// use tessera_vit::{load_model, save_model, VisionTransformer, VitConfig};
/// let c = VitConfig { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3, ..Default::default() };
/// let model = VisionTransformer::new(c, &mut Rng::seed(0))?;
/// let dir = std::env::temp_dir().join(format!("tessera-vit-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("model.safetensors");
/// save_model(&model, &path, &HashMap::from([("note".to_string(), "hi".to_string())]))?;
/// let (back, meta) = load_model(&path)?;
/// assert_eq!(back.config(), model.config());
/// assert_eq!(meta["note"], "hi");
/// assert_eq!(back.pos_embed().value(), model.pos_embed().value());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), tessera_vit::Error>(())
/// ```
pub fn load_model(path: impl AsRef<Path>) -> Result<(VisionTransformer, HashMap<String, String>)> {
    let path = path.as_ref();
    let (file, meta, config) = read_config(path)?;
    let vars = VarMap::new();
    // No larger than the file can fill: the configuration comes from the file too.
    let model = VisionTransformer::build(&VarBuilder::zeros_for(&vars, &file), config.model)?;
    load_weights(&vars, path)?;
    Ok((model, meta))
}
