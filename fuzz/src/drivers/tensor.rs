//! Drivers of checkpoints: the safetensors reader, loading by name into a model, the
//! JSON of a checkpoint's metadata, and the model loaders of the three families.

use std::collections::HashMap;
use std::path::Path;

use rand::Rng as _;
use serde_json::{json, Value};
use tessera_nn::{get_json, metadata_fields, Params, TrainProgress, CONFIG_KEY, TRAIN_STATE_KEY};
use tessera_tensor::{Rng, SafeTensorsFile, Tensor};

use super::{err, put, Json};
use crate::input::{mutate_generic, mutate_json, CaseRng, Input, Kind, Seed};
use crate::seeds::{self, msg, Made};
use crate::Driver;

/// Dtype names, stored and not, valid and not.
const DTYPES: [&str; 20] = [
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "U32", "U64",
    "F8_E4M3", "F8_E5M2", "F4", "F6_E2M3", "C64", "Q4", "f32",
];

/// Rewrites a safetensors file at the level of its header: a dtype swapped, a shape or
/// data offsets changed (to zero, huge, overlapping, past the end), an entry removed,
/// renamed or written twice, the metadata's values changed (its JSON entries mutated as
/// JSON), then the length field recomputed (most of the time) and the data kept, cut
/// or extended.
pub fn mutate_safetensors(bytes: &mut Vec<u8>, names: &[String], rng: &mut CaseRng) {
    if bytes.len() < 8 {
        return;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let Some(end) = n.checked_add(8).filter(|&end| end <= bytes.len()) else {
        return;
    };
    let header = &bytes[8..end];
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(header) else {
        return;
    };
    let mut data = bytes[end..].to_vec();
    // Entries that are objects (an earlier mutation may have made one a number).
    let tensors: Vec<String> = map
        .iter()
        .filter(|(k, v)| *k != "__metadata__" && v.is_object())
        .map(|(k, _)| k.clone())
        .collect();
    let pick = |rng: &mut CaseRng| {
        (!tensors.is_empty()).then(|| tensors[rng.random_range(0..tensors.len())].clone())
    };
    let mut duplicate = None;
    match rng.random_range(0..9) {
        0 => {
            if let Some(t) = pick(rng) {
                map[&t]["dtype"] = json!(DTYPES[rng.random_range(0..DTYPES.len())]);
            }
        }
        1 => {
            if let Some(t) = pick(rng) {
                let shape = map[&t]["shape"].as_array().cloned().unwrap_or_default();
                let mut shape: Vec<Value> = shape;
                match rng.random_range(0..5) {
                    0 => shape.clear(),
                    1 => shape.push(json!(rng.random_range(0..4))),
                    2 => {
                        shape.pop();
                    }
                    3 if !shape.is_empty() => {
                        let i = rng.random_range(0..shape.len());
                        shape[i] =
                            json!([0u64, 1, 1 << 32, 1 << 62, u64::MAX][rng.random_range(0..5)]);
                    }
                    _ => shape.reverse(),
                }
                map[&t]["shape"] = Value::Array(shape);
            }
        }
        2 => {
            if let Some(t) = pick(rng) {
                let len = data.len() as u64;
                let (a, b) = match rng.random_range(0..6) {
                    0 => (0, 0),
                    1 => (len, len + 4),
                    2 => (0, len),
                    3 => (4, 2),
                    4 => (0, u64::MAX),
                    _ => (rng.random_range(0..=len), rng.random_range(0..=len)),
                };
                map[&t]["data_offsets"] = json!([a, b]);
            }
        }
        3 => {
            if let Some(t) = pick(rng) {
                map.remove(&t);
            }
        }
        4 => {
            if let Some(t) = pick(rng) {
                let v = map.remove(&t).unwrap_or_default();
                let new = match rng.random_range(0..4) {
                    0 if !names.is_empty() => names[rng.random_range(0..names.len())].clone(),
                    1 => String::new(),
                    2 => "x".repeat(rng.random_range(1..300)),
                    _ => format!("optim.{t}"),
                };
                map.insert(new, v);
            }
        }
        5 => duplicate = pick(rng),
        6 => {
            let value = match rng.random_range(0..4) {
                0 => json!(5),
                1 => json!({"nested": {"x": 1}}),
                2 => Value::Null,
                _ => json!(["a"]),
            };
            if rng.random_bool(0.5) {
                map.insert("__metadata__".into(), value);
            } else if let Some(Value::Object(m)) = map.get_mut("__metadata__") {
                m.insert("odd".into(), value);
            }
        }
        7 => {
            // A metadata entry mutated as JSON (the model's configuration, the progress).
            if let Some(Value::Object(m)) = map.get_mut("__metadata__") {
                let keys: Vec<String> = m.keys().cloned().collect();
                if !keys.is_empty() {
                    let k = &keys[rng.random_range(0..keys.len())];
                    if let Some(Value::String(s)) = m.get(k) {
                        let new = match mutate_json(s.as_bytes(), rng) {
                            Some(j) => String::from_utf8_lossy(&j).into_owned(),
                            None => format!("{s}{}", ["}", "\"", "0", "é"][rng.random_range(0..4)]),
                        };
                        m.insert(k.clone(), Value::String(new));
                    }
                }
            }
        }
        _ => {
            let extra = format!("t{}", rng.random_range(0..1000));
            let len = data.len() as u64;
            map.insert(
                extra,
                json!({"dtype": "U8", "shape": [len.min(3)], "data_offsets": [0, len.min(3)]}),
            );
        }
    }
    let mut text = serde_json::to_vec(&map).expect("a map of values serialises");
    if let Some(t) = duplicate {
        // `{"t":{...}` becomes `{"t":<entry>,"t":{...}`.
        let entry = serde_json::to_string(&map[&t]).expect("a value serialises");
        let key = serde_json::to_string(&t).expect("a string serialises");
        text.splice(1..1, format!("{key}:{entry},").into_bytes());
    }
    if rng.random_bool(0.1) {
        text.extend(std::iter::repeat_n(b' ', rng.random_range(1..16)));
    }
    let len = if rng.random_bool(0.85) {
        text.len() as u64
    } else {
        [
            0,
            1,
            text.len() as u64 + 1,
            u64::MAX,
            1 << 40,
            (text.len() - 1) as u64,
        ][rng.random_range(0..6)]
    };
    match rng.random_range(0..8) {
        0 => data.truncate(rng.random_range(0..=data.len())),
        1 => data.extend(std::iter::repeat_n(0u8, rng.random_range(1..64))),
        _ => {}
    }
    let mut out = len.to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    *bytes = out;
}

/// A driver of one safetensors file: its seeds, the tensor names its header mutations
/// use, and the parser to run on the file.
struct File {
    seeds: Vec<Seed>,
    names: Vec<String>,
    run: fn(&Input, &Path) -> Result<(), String>,
}

impl Driver for File {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    /// A safetensors-aware mutation half the time, a generic one otherwise.
    fn mutate(&self, input: &mut Input, rng: &mut CaseRng) {
        let Some(s) = input.seed else { return };
        if rng.random_bool(0.5) {
            mutate_safetensors(&mut input.parts[0], &self.names, rng);
        } else {
            mutate_generic(input, 0, &self.seeds, s, rng);
        }
    }

    fn run(&self, input: &Input, dir: &Path) -> Result<(), String> {
        (self.run)(input, dir)
    }
}

/// A [`File`] driver of `seeds`, mutated with `names`, run by `run`.
fn file(
    seeds: Vec<Seed>,
    names: Vec<String>,
    run: fn(&Input, &Path) -> Result<(), String>,
) -> Made<Box<dyn Driver>> {
    Ok(Box::new(File { seeds, names, run }))
}

/// The `safetensors` driver: the reader, run by `run_safetensors`.
pub fn safetensors() -> Made<Box<dyn Driver>> {
    let names = seeds::small_model(0)?.names();
    file(seeds::safetensors_seeds()?, names, run_safetensors)
}

/// Reads everything from an opened file, as `tessera inspect` and the loaders do.
fn read_all(path: &Path) -> Result<(), String> {
    let file = SafeTensorsFile::open(path).map_err(err)?;
    let _ = file.names();
    let entries = file.entries();
    let meta = file.metadata().map_err(err)?;
    let _ = metadata_fields(&meta);
    for (name, shape, _) in &entries {
        if let Ok(t) = file.get(name) {
            assert_eq!(t.shape(), &shape[..], "get({name:?}) has the listed shape");
        }
    }
    assert!(file.get("no such tensor").is_err());
    let all = file.load_all().map_err(err)?;
    assert_eq!(all.len(), entries.len());
    tessera_tensor::load_safetensors(path).map_err(err)?;
    Ok(())
}

/// The safetensors reader: open (which validates the header), then every way of
/// reading the file back.
fn run_safetensors(input: &Input, dir: &Path) -> Result<(), String> {
    read_all(&put(dir, "input.safetensors", &input.parts[0]))
}

/// The `checkpoint` driver, run by `run_checkpoint`.
pub fn checkpoint() -> Made<Box<dyn Driver>> {
    let vars = seeds::small_model(0)?;
    let names = vars.names();
    let mut seeds = seeds::safetensors_seeds()?;
    // Files that differ from the model: a missing, an unexpected and a misshapen tensor.
    let mut t = vars.tensors();
    t.retain(|(n, _)| n != "fc1.bias" && n != "norm.bias");
    t.push(("fc2.weight".into(), Tensor::zeros(&[2])));
    t.push(("norm.bias".into(), Tensor::zeros(&[4])));
    let odd = tessera_tensor::safetensors_bytes(t.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(msg)?;
    seeds.push(seeds::safetensors_seed(
        "missing, unexpected, misshapen",
        odd,
    ));
    file(seeds, names, run_checkpoint)
}

/// Loading by name into [`seeds::small_model`], strictly and not.
fn run_checkpoint(input: &Input, dir: &Path) -> Result<(), String> {
    let path = put(dir, "input.safetensors", &input.parts[0]);
    // A fresh model each time: a failed load must leave it untouched, checked below.
    let model = seeds::small_model(1).map_err(|e| format!("the model: {e}"))?;
    let before = model.tensors();
    let strict = tessera_nn::load_checkpoint(&path, &model, true);
    if strict.is_err() {
        let after = model.tensors();
        assert!(
            before.iter().zip(&after).all(|(a, b)| a.1 == b.1),
            "a failed strict load changed the model"
        );
    }
    let loose = tessera_nn::load_checkpoint(&path, &model, false);
    if let Ok(report) = &loose {
        let _ = report.to_string();
    }
    let _ = model.vars().load(&path, false);
    strict.map(|_| ()).map_err(err)
}

/// The `metadata-json` driver, run by `run_metadata_json`; its seeds are the `config`
/// and `train_state` entries of real checkpoints of the three families.
pub fn metadata_json() -> Made<Box<dyn Driver>> {
    let mut seeds = Vec::new();
    let dir = crate::runner::scratch_dir().map_err(msg)?;
    for (name, bytes) in model_files()? {
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, &bytes).map_err(msg)?;
        let meta = SafeTensorsFile::open(&path)
            .and_then(|f| f.metadata())
            .map_err(msg)?;
        for key in [CONFIG_KEY, TRAIN_STATE_KEY] {
            if let Some(v) = meta.get(key) {
                seeds.push(Seed::one(
                    format!("{name}: {key}"),
                    v.clone().into_bytes(),
                    Kind::Text,
                ));
            }
        }
    }
    Ok(Box::new(Json {
        seeds,
        run: run_metadata_json,
    }))
}

/// The JSON entries of a checkpoint's metadata parsed as every type tessera reads
/// from them.
fn run_metadata_json(input: &Input) -> Result<(), String> {
    let text = input.text(0);
    let meta = HashMap::from([
        (CONFIG_KEY.to_string(), text.clone()),
        (TRAIN_STATE_KEY.to_string(), text.clone()),
    ]);
    let path = Path::new("checkpoint.safetensors");
    let _ = metadata_fields(&meta);
    let mut accepted = 0;
    let mut first_error = None;
    let mut note = |r: Result<(), String>| match r {
        Ok(()) => accepted += 1,
        Err(e) => {
            first_error.get_or_insert(e);
        }
    };
    note(
        get_json::<TrainProgress>(&meta, TRAIN_STATE_KEY, path)
            .map_err(err)
            .map(|p| {
                if let Some(state) = p.rng {
                    let _ = state.rng().next_u32();
                }
            }),
    );
    note(
        get_json::<tessera_transformer::CheckpointConfig>(&meta, CONFIG_KEY, path)
            .map_err(err)
            .and_then(|c| c.model.validate().map_err(err)),
    );
    note(
        get_json::<tessera_vit::CheckpointConfig>(&meta, CONFIG_KEY, path)
            .map_err(err)
            .and_then(|c| c.model.validate().map_err(err)),
    );
    note(
        get_json::<tessera_rnn::CharLmConfig>(&meta, CONFIG_KEY, path)
            .map(|_| ())
            .map_err(err),
    );
    note(
        serde_json::from_str::<Value>(&text)
            .map_err(err)
            .and_then(|v| {
                let train = v.get("train").cloned().unwrap_or_default();
                serde_json::from_value::<tessera_rnn::TrainConfig>(train)
                    .map(|_| ())
                    .map_err(err)
            }),
    );
    match (accepted, first_error) {
        (0, Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Real checkpoints of the three families: model files and training checkpoints of a
/// tiny Transformer, ViT and character LMs (Elman and LSTM).
pub fn model_files() -> Made<Vec<(String, Vec<u8>)>> {
    let dir = crate::runner::scratch_dir().map_err(msg)?;
    let mut out = Vec::new();
    let mut keep = |name: &str, path: &Path| -> Made<()> {
        out.push((name.to_string(), std::fs::read(path).map_err(msg)?));
        Ok(())
    };
    let p = |n: &str| dir.path().join(n);
    // Transformer: a model and a training checkpoint.
    let config = tessera_transformer::TransformerConfig {
        max_len: 8,
        ..tessera_transformer::TransformerConfig::small(12, 4, 2, 8, 1)
    };
    let model = tessera_transformer::Transformer::new(config, &mut Rng::seed(0)).map_err(msg)?;
    model
        .save(p("t.safetensors"), &HashMap::new())
        .map_err(msg)?;
    keep("transformer model", &p("t.safetensors"))?;
    let corpus = tiny_corpus();
    let train = tessera_transformer::TrainConfig {
        max_tokens: 16,
        warmup: 4,
        lr_factor: 1.0,
        seed: 0,
    };
    let mut trainer = tessera_transformer::Trainer::new(model, corpus, train).map_err(msg)?;
    trainer.step().map_err(msg)?;
    trainer
        .save(p("tt.safetensors"), &HashMap::new())
        .map_err(msg)?;
    keep("transformer training", &p("tt.safetensors"))?;
    // ViT: a model and a training checkpoint.
    let vc = tessera_vit::VitConfig {
        img_size: 4,
        patch_size: 2,
        in_chans: 1,
        embed_dim: 4,
        depth: 1,
        num_heads: 2,
        num_classes: 3,
        ..Default::default()
    };
    let vit = tessera_vit::VisionTransformer::new(vc, &mut Rng::seed(0)).map_err(msg)?;
    tessera_vit::save_model(&vit, p("v.safetensors"), &HashMap::new()).map_err(msg)?;
    keep("vit model", &p("v.safetensors"))?;
    let vt = tessera_vit::Trainer::new(
        vit,
        tessera_vit::TrainConfig {
            batch_size: 2,
            ..Default::default()
        },
    )
    .map_err(msg)?;
    vt.save(p("vt.safetensors"), &HashMap::new()).map_err(msg)?;
    keep("vit training", &p("vt.safetensors"))?;
    // Character LMs: an Elman model, an LSTM training checkpoint with carried state.
    for (cell, name) in [
        (tessera_rnn::Cell::Elman, "elman"),
        (tessera_rnn::Cell::Lstm, "lstm"),
    ] {
        let c = tessera_rnn::CharLmConfig {
            cell,
            vocab: 5,
            hidden: 3,
            layers: 1,
        };
        let lm = tessera_rnn::CharLm::new(c, &mut Rng::seed(0)).map_err(msg)?;
        let meta = HashMap::from([(tessera_rnn::VOCAB_KEY.to_string(), "abcde".to_string())]);
        let ids: Vec<usize> = (0..40).map(|i| i * 7 % 5).collect();
        let tc = tessera_rnn::TrainConfig {
            batch: 2,
            seq: 3,
            lr: 1e-3,
            clip: 5.0,
        };
        if cell == tessera_rnn::Cell::Elman {
            lm.save(p("r.safetensors"), &Default::default(), &meta)
                .map_err(msg)?;
            keep("charlm elman model", &p("r.safetensors"))?;
        } else {
            let mut state = tessera_rnn::TrainState::new(lm, &ids, tc).map_err(msg)?;
            state.step().map_err(msg)?;
            state.save(p("rt.safetensors"), &meta).map_err(msg)?;
            keep(&format!("charlm {name} training"), &p("rt.safetensors"))?;
        }
    }
    Ok(out)
}

/// A corpus of three short pairs for the Transformer's trainer.
fn tiny_corpus() -> tessera_transformer::Corpus {
    tessera_transformer::Corpus {
        pairs: vec![
            (vec![4, 5], vec![5, 4]),
            (vec![6, 7, 8], vec![8, 7, 6]),
            (vec![9], vec![9]),
        ],
        bos: 1,
        eos: 2,
        pad: 0,
    }
}

/// The `model-load` driver, run by `run_model_load`.
pub fn model_load() -> Made<Box<dyn Driver>> {
    let seeds: Vec<Seed> = model_files()?
        .into_iter()
        .map(|(n, b)| seeds::safetensors_seed(&n, b))
        .collect();
    let mut names = Vec::new();
    for s in &seeds {
        let header_len = u64::from_le_bytes(s.parts[0][..8].try_into().expect("8 bytes")) as usize;
        let header: Value = serde_json::from_slice(&s.parts[0][8..8 + header_len]).map_err(msg)?;
        names.extend(
            header
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys().cloned()),
        );
    }
    names.sort();
    names.dedup();
    file(seeds, names, run_model_load)
}

/// The model loaders of the three families, and the trainers' resume.
fn run_model_load(input: &Input, dir: &Path) -> Result<(), String> {
    let path = put(dir, "model.safetensors", &input.parts[0]);
    let kind = SafeTensorsFile::open(&path)
        .and_then(|f| f.metadata())
        .map_err(err)?
        .get("model")
        .cloned()
        .unwrap_or_default();
    // Each loader is tried on every file: a file of another kind must be refused.
    let t = tessera_transformer::load_model(&path).map(|_| ());
    let _ = tessera_transformer::read_config(&path);
    let tr = tessera_transformer::Trainer::resume(&path, tiny_corpus()).map(|_| ());
    let v = tessera_vit::load_model(&path).map(|_| ());
    let vr = tessera_vit::Trainer::resume(&path).map(|_| ());
    let r = tessera_rnn::CharLm::load(&path).map(|(_, _, meta)| {
        let _ = tessera_rnn::read_vocab(&meta, &path);
    });
    let ids: Vec<usize> = (0..40).map(|i| i * 7 % 5).collect();
    let rr = tessera_rnn::TrainState::resume(&path, &ids).map(|_| ());
    let results = [
        t.map_err(err),
        tr.map_err(err),
        v.map_err(err),
        vr.map_err(err),
        r.map_err(err),
        rr.map_err(err),
    ];
    if results.iter().any(Result::is_ok) {
        Ok(())
    } else {
        let first = results
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_default();
        Err(format!("{kind}: {first}"))
    }
}
