//! Saving and loading parameters by name as safetensors.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use tessera_tensor::{save_safetensors, SafeTensorsFile};

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
    let params = model.named_parameters();
    let mut values: Vec<(String, tessera_tensor::Tensor)> =
        params.iter().map(|(n, p)| (n.clone(), p.value())).collect();
    values.extend(
        model
            .named_buffers()
            .into_iter()
            .map(|(n, b)| (n, b.value())),
    );
    save_safetensors(path, values.iter().map(|(n, t)| (n.as_str(), t)), metadata)?;
    Ok(())
}

/// A named tensor of the model: a parameter or a buffer.
enum Slot {
    Param(crate::Parameter),
    Buf(crate::Buffer),
}

impl Slot {
    fn value(&self) -> tessera_tensor::Tensor {
        match self {
            Slot::Param(p) => p.value(),
            Slot::Buf(b) => b.value(),
        }
    }
}

/// Loads parameters and buffers by name. Strict: any missing key, unexpected key or
/// shape mismatch is an error listing all of them, and nothing is changed. Non-strict:
/// the matching tensors are loaded and the report of the rest is returned.
pub fn load_checkpoint(
    path: impl AsRef<Path>,
    model: &impl Params,
    strict: bool,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let file = SafeTensorsFile::open(path)?;
    let shapes: BTreeMap<String, Vec<usize>> = file.shapes().into_iter().collect();
    let mut slots: Vec<(String, Slot)> = model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, Slot::Param(p)))
        .collect();
    slots.extend(
        model
            .named_buffers()
            .into_iter()
            .map(|(n, b)| (n, Slot::Buf(b))),
    );
    let mut report = LoadReport::default();
    let mut to_load = Vec::new();
    for (name, slot) in &slots {
        let shape = slot.value().shape().to_vec();
        match shapes.get(name) {
            None => report.missing.push(name.clone()),
            Some(s) if *s != shape => report.mismatched.push((name.clone(), shape, s.clone())),
            Some(_) => to_load.push((name, slot)),
        }
    }
    let known: std::collections::HashSet<&str> = slots.iter().map(|(n, _)| n.as_str()).collect();
    report.unexpected = shapes
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    report.missing.sort();
    report.mismatched.sort();
    if strict && !report.is_clean() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            report,
        });
    }
    // Read everything first, so a read error leaves the model untouched.
    let values = to_load
        .iter()
        .map(|(n, _)| file.get(n))
        .collect::<tessera_tensor::Result<Vec<_>>>()?;
    for ((_, slot), v) in to_load.iter().zip(values) {
        match slot {
            Slot::Param(p) => p.set(v)?,
            Slot::Buf(b) => b.set(v),
        }
    }
    Ok(report)
}
