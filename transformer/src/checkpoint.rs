//! Checkpoints of a [`Transformer`]: the parameters by name, and in the metadata a kind
//! tag ([`MODEL_KEY`] = [`MODEL_TAG`]), one JSON `config` entry ([`CheckpointConfig`])
//! and, for a training run, one JSON `train_state` entry
//! ([`tessera_nn::TrainProgress`]), beside any entries of the caller's (a vocabulary, the
//! data's name). A training checkpoint also holds the optimizer's state as tensors
//! `optim.*`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_nn::{get_json, put_json, Parameter, Params, VarBuilder, VarMap, CONFIG_KEY};
use tessera_tensor::{SafeTensorsFile, Tensor};

use crate::{Error, Result, TrainConfig, Transformer, TransformerConfig};

/// The metadata key of a checkpoint's kind tag.
pub const MODEL_KEY: &str = "model";

/// The kind tag of a Transformer checkpoint (the value of [`MODEL_KEY`]).
pub const MODEL_TAG: &str = "tessera-transformer";

/// The special ids of a training corpus, as a training checkpoint records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    /// Begin-of-sequence id.
    pub bos: usize,
    /// End-of-sequence id.
    pub eos: usize,
    /// Padding id.
    pub pad: usize,
}

/// The `config` metadata entry of a Transformer checkpoint: the model's configuration,
/// and for a training checkpoint the run's settings.
///
/// ```
/// use tessera_transformer::{CheckpointConfig, TransformerConfig};
/// let c = CheckpointConfig { model: TransformerConfig::small(20, 16, 2, 32, 1), train: None, ids: None };
/// let json = serde_json::to_string(&c).unwrap();
/// assert!(json.starts_with(r#"{"model":{"src_vocab":20,"#) && !json.contains("train"));
/// assert_eq!(serde_json::from_str::<CheckpointConfig>(&json).unwrap(), c);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// The model.
    pub model: TransformerConfig,
    /// The training run's hyperparameters (training checkpoints only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
    /// The training corpus's special ids (training checkpoints only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<SpecialIds>,
}

impl CheckpointConfig {
    /// `metadata` with this configuration and the kind tag written in.
    pub(crate) fn metadata(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        let mut meta = metadata.clone();
        meta.insert(MODEL_KEY.into(), MODEL_TAG.into());
        put_json(&mut meta, CONFIG_KEY, self)?;
        Ok(meta)
    }
}

/// The configuration and the metadata of the Transformer checkpoint `path`, without
/// its tensors. A file of another model is an [`Error::NotTransformer`]; a file written
/// by an earlier version of tessera (separate metadata entries, no `config`) is an error
/// that says so.
pub fn read_config(path: impl AsRef<Path>) -> Result<(CheckpointConfig, HashMap<String, String>)> {
    let path = path.as_ref();
    let meta = SafeTensorsFile::open(path)?.metadata()?;
    let found = meta.get(MODEL_KEY);
    if found.map(String::as_str) != Some(MODEL_TAG) {
        return Err(Error::NotTransformer {
            path: path.to_path_buf(),
            found: found.cloned(),
        });
    }
    let config: CheckpointConfig = get_json(&meta, CONFIG_KEY, path)?;
    config.model.validate()?;
    Ok((config, meta))
}

/// A model from a checkpoint written by [`Transformer::save`] or
/// [`crate::Trainer::save`]: built without random draws, then filled by name (strictly:
/// a missing, unexpected or misshapen tensor is an error listing all of them; the
/// optimizer's state of a training checkpoint is skipped). Returns the model and the
/// file's metadata.
pub fn load_model(path: impl AsRef<Path>) -> Result<(Transformer, HashMap<String, String>)> {
    let path = path.as_ref();
    let (config, meta) = read_config(path)?;
    let vars = VarMap::new();
    // No larger than the file can fill: the configuration comes from the file too.
    let vb = VarBuilder::zeros_for(&vars, &SafeTensorsFile::open(path)?);
    let model = Transformer::build(&vb, config.model)?;
    load_weights(&vars, path)?;
    Ok((model, meta))
}

/// Loads `vars` by name from `path`, strict but for the optimizer's tensors.
fn load_weights(vars: &VarMap, path: &Path) -> Result<()> {
    let mut report = vars.load(path, false)?;
    report
        .unexpected
        .retain(|n| !n.starts_with(tessera_optim::STATE_PREFIX));
    if report.is_clean() {
        Ok(())
    } else {
        let path = path.to_path_buf();
        Err(tessera_nn::Error::Checkpoint { path, report }.into())
    }
}

impl Transformer {
    /// Writes the model's parameters by name (atomically), with the kind tag, the
    /// `config` entry (the model only) and the caller's `metadata`.
    ///
    /// ```
    /// use tessera_nn::Params;
    /// use tessera_tensor::Rng;
    /// use tessera_transformer::{load_model, Transformer, TransformerConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("model.safetensors");
    /// let model = Transformer::new(TransformerConfig::small(20, 16, 2, 32, 1), &mut Rng::seed(0))?;
    /// let extra = [("data".to_string(), "copy task".to_string())].into();
    /// model.save(&path, &extra)?;
    /// let (back, meta) = load_model(&path)?;
    /// assert_eq!(back.config(), model.config());
    /// assert_eq!(meta["data"], "copy task");
    /// let w = |m: &Transformer| m.named_parameters()[0].1.value().to_vec();
    /// assert_eq!(w(&back), w(&model));
    /// # Ok::<(), tessera_transformer::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>, metadata: &HashMap<String, String>) -> Result<()> {
        let config = CheckpointConfig {
            model: *self.config(),
            train: None,
            ids: None,
        };
        Ok(self.vars().save(path, Some(&config.metadata(metadata)?))?)
    }
}

/// The element-wise mean of the parameters of several checkpoints of one model (the
/// paper averages the last 5 or 20), written by name into `model`. Each file must hold
/// every parameter of `model` with its shape (and nothing else but optimizer state).
pub fn average_checkpoints(model: &Transformer, paths: &[impl AsRef<Path>]) -> Result<()> {
    if paths.is_empty() {
        let op = "average_checkpoints";
        return Err(Error::setting(op, "checkpoints", 0, "at least one"));
    }
    let params = model.named_parameters();
    let mut sums: Vec<Vec<f64>> = params
        .iter()
        .map(|(_, p)| vec![0.0; p.value().numel()])
        .collect();
    for path in paths {
        // A store of the same names and shapes, filled from the file.
        let vars = VarMap::new();
        for (name, p) in &params {
            vars.add_parameter(
                name.clone(),
                Parameter::new(Tensor::zeros(p.value().shape())),
            )?;
        }
        load_weights(&vars, path.as_ref())?;
        for (s, (_, p)) in sums.iter_mut().zip(vars.named_parameters()) {
            s.iter_mut()
                .zip(p.value().to_vec())
                .for_each(|(a, v)| *a += f64::from(v));
        }
    }
    let k = paths.len() as f64;
    for (s, (_, p)) in sums.into_iter().zip(&params) {
        let shape = p.value().shape().to_vec();
        p.set(Tensor::from_vec(
            s.into_iter().map(|v| (v / k) as f32).collect(),
            &shape,
        )?)?;
    }
    Ok(())
}

/// The metadata key of the BPE vocabulary a model was trained with (its JSON form).
pub const BPE_KEY: &str = "bpe";

#[cfg(feature = "bpe")]
/// The BPE vocabulary kept in the metadata of the checkpoint `path`.
pub fn read_bpe(
    meta: &HashMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<tessera_data::Bpe> {
    let json = tessera_nn::get_entry(meta, BPE_KEY, path.as_ref(), "BPE vocabulary")?;
    Ok(tessera_data::Bpe::from_json(json)?)
}
