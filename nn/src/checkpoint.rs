//! Saving and loading parameters by name as safetensors.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_tensor::Rng;

use crate::{Error, Params, Result};

/// What a load found: keys the model has and the file lacks, keys the file has and the
/// model lacks, and shape mismatches, each sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// In the model, not in the file.
    pub missing: Vec<String>,
    /// In the file, not in the model.
    pub unexpected: Vec<String>,
    /// `(name, model shape, file shape)`.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// `(name, stored dtype)` of the tensors loaded from another dtype than F32 (F16,
    /// BF16, F64, ...) and converted to f32: not an error, but said, since an f64 file
    /// loses precision and a half one was already rounded.
    pub converted: Vec<(String, String)>,
}

impl LoadReport {
    /// Whether names and shapes matched exactly.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected keys: {}", self.unexpected.join(", ")));
        }
        for (n, want, got) in &self.mismatched {
            parts.push(format!("{n}: model has shape {want:?}, file has {got:?}"));
        }
        if parts.is_empty() {
            parts.push("all keys and shapes match".into());
        }
        let mut dtypes: Vec<&str> = self.converted.iter().map(|(_, d)| d.as_str()).collect();
        dtypes.sort_unstable();
        dtypes.dedup();
        for dtype in dtypes {
            let count = self.converted.iter().filter(|(_, d)| d == dtype).count();
            parts.push(format!("{count} tensor(s) converted from {dtype} to f32"));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Writes every parameter and buffer of `model` by name (atomically), with string
/// metadata.
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    model: &impl Params,
    metadata: Option<&HashMap<String, String>>,
) -> Result<()> {
    model.vars().save(path, metadata)
}

/// Loads parameters and buffers by name (see [`VarMap::load`](crate::VarMap::load)).
/// Strict: any missing key, unexpected key or shape mismatch is an error listing all of
/// them, and nothing is changed. Not strict: the matching tensors are loaded and the
/// report of the rest is returned.
pub fn load_checkpoint(
    path: impl AsRef<Path>,
    model: &impl Params,
    strict: bool,
) -> Result<LoadReport> {
    model.vars().load(path, strict)
}

/// The metadata key of a checkpoint's configuration: one JSON object (the model's
/// configuration, and a training run's settings where the file is a training checkpoint).
pub const CONFIG_KEY: &str = "config";

/// The metadata key of a training checkpoint's progress: one JSON [`TrainProgress`].
pub const TRAIN_STATE_KEY: &str = "train_state";

/// Where a training run stands: what a checkpoint needs, besides the weights and the
/// optimizer's state, to continue exactly where it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainProgress {
    /// Optimizer steps taken.
    pub step: u64,
    /// Completed passes over the training data.
    pub epoch: u64,
    /// Position in the current pass (batches or chunks already taken).
    pub position: u64,
    /// The state of the generator of data order, augmentation and dropout, if the run
    /// has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngState>,
}

impl TrainProgress {
    /// The saved position as an index into a pass of `len` `what` (`batches`, `chunks`),
    /// or [`Error::Position`] naming `path` when the data given is shorter than that.
    ///
    /// ```
    /// use tessera_nn::TrainProgress;
    /// let progress = TrainProgress { position: 3, ..TrainProgress::default() };
    /// assert_eq!(progress.position_within("run.safetensors", 4, "batches")?, 3);
    /// assert!(progress.position_within("run.safetensors", 3, "batches").is_err());
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn position_within(
        &self,
        path: impl AsRef<Path>,
        len: usize,
        what: &'static str,
    ) -> Result<usize> {
        if self.position >= len as u64 {
            return Err(Error::Position {
                path: path.as_ref().to_path_buf(),
                position: self.position,
                len,
                what,
            });
        }
        Ok(self.position as usize)
    }
}

/// A [`Rng`]'s state as integers: its 32-byte key and its position in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The ChaCha key ([`Rng::key`]).
    pub key: [u8; 32],
    /// Words consumed ([`Rng::word_pos`]); a decimal string, since JSON numbers stop
    /// short of 128 bits.
    #[serde(with = "u128_string")]
    pub word_pos: u128,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &Rng) -> RngState {
        RngState {
            key: rng.key(),
            word_pos: rng.word_pos(),
        }
    }

    /// A generator in this state.
    pub fn rng(&self) -> Rng {
        Rng::from_state(self.key, self.word_pos)
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Writes `value` as one JSON entry `key` of a checkpoint's metadata.
///
/// ```
/// use std::collections::HashMap;
/// use tessera_nn::{get_json, put_json, TrainProgress};
/// let mut meta = HashMap::new();
/// let progress = TrainProgress { step: 12, epoch: 1, position: 3, rng: None };
/// put_json(&mut meta, "train_state", &progress)?;
/// assert_eq!(meta["train_state"], r#"{"step":12,"epoch":1,"position":3}"#);
/// let back: TrainProgress = get_json(&meta, "train_state", "run.safetensors".as_ref())?;
/// assert_eq!(back, progress);
/// # Ok::<(), tessera_nn::Error>(())
/// ```
pub fn put_json<T: Serialize>(
    meta: &mut HashMap<String, String>,
    key: &str,
    value: &T,
) -> Result<()> {
    let text = serde_json::to_string(value).map_err(|e| Error::Metadata {
        path: Default::default(),
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    meta.insert(key.to_string(), text);
    Ok(())
}

/// The text entry `key` of the metadata of the checkpoint `path`; a missing one is an
/// [`Error::Metadata`] that says the file has no `what`.
///
/// ```
/// use std::collections::HashMap;
/// use std::path::Path;
/// let meta = HashMap::from([("vocab".to_string(), "abc".to_string())]);
/// let path = Path::new("lm.safetensors");
/// assert_eq!(tessera_nn::get_entry(&meta, "vocab", path, "vocabulary")?, "abc");
/// let err = tessera_nn::get_entry(&meta, "bpe", path, "BPE vocabulary").unwrap_err();
/// assert!(err.to_string().contains("no BPE vocabulary"));
/// # Ok::<(), tessera_nn::Error>(())
/// ```
pub fn get_entry<'a>(
    meta: &'a HashMap<String, String>,
    key: &str,
    path: &Path,
    what: &str,
) -> Result<&'a str> {
    meta.get(key)
        .map(String::as_str)
        .ok_or_else(|| Error::Metadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: format!("missing: no {what} in this checkpoint"),
        })
}

/// Reads the JSON entry `key` of the metadata of the checkpoint `path`. A missing entry
/// or one that does not parse is an [`Error::Metadata`] naming the file and the key.
pub fn get_json<T: DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    let bad = |reason: String| Error::Metadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let text = meta.get(key).ok_or_else(|| {
        bad(if meta.contains_key(CONFIG_KEY) {
            let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
            keys.sort_unstable();
            format!("missing: the file has {}", keys.join(", "))
        } else if meta.contains_key("model") {
            "missing: the file was written by an earlier version of tessera, which kept its \
             settings as separate entries; train it again with this version"
                .to_string()
        } else {
            "missing: not a checkpoint written by this kind of tessera model".to_string()
        })
    })?;
    serde_json::from_str(text).map_err(|e| bad(e.to_string()))
}

/// A checkpoint's metadata as `(key, value)` pairs to read, sorted by key: the JSON
/// objects under [`CONFIG_KEY`] and [`TRAIN_STATE_KEY`] flattened into dotted keys
/// (`config.model.depth`), every other entry as it is.
///
/// ```
/// use std::collections::HashMap;
/// let meta = HashMap::from([
///     ("config".to_string(), r#"{"model": {"depth": 12, "pool": "token"}}"#.to_string()),
///     ("data".to_string(), "mnist".to_string()),
/// ]);
/// let fields = tessera_nn::metadata_fields(&meta);
/// assert_eq!(fields[0], ("config.model.depth".to_string(), "12".to_string()));
/// assert_eq!(fields[1], ("config.model.pool".to_string(), "token".to_string()));
/// assert_eq!(fields[2], ("data".to_string(), "mnist".to_string()));
/// ```
pub fn metadata_fields(meta: &HashMap<String, String>) -> Vec<(String, String)> {
    fn walk(key: String, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    walk(format!("{key}.{k}"), v, out);
                }
            }
            serde_json::Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
    let mut out = Vec::new();
    for (key, value) in meta {
        let json = [CONFIG_KEY, TRAIN_STATE_KEY].contains(&key.as_str());
        match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v @ serde_json::Value::Object(_)) if json => walk(key.clone(), &v, &mut out),
            _ => out.push((key.clone(), value.clone())),
        }
    }
    out.sort();
    out
}
