//! Checkpoints and training runs: the metadata layout (`model`, one JSON `config`, one
//! JSON `train_state`), a run saved and resumed, files of an earlier version refused
//! clearly (written by `testutil/scripts/make_legacy_checkpoints.py`), the shared
//! non-finite-loss error, heads replaced in the store, and building for a load drawing
//! nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use tessera_nn::{Params, TrainProgress, VarBuilder, VarMap};
use tessera_tensor::{Rng, SafeTensorsFile, Tensor};
use tessera_vit::{
    load_model, save_model, CheckpointConfig, Error, GlobalPool, TrainConfig, Trainer,
    VisionTransformer, VitConfig,
};

fn tiny(global_pool: GlobalPool) -> VitConfig {
    VitConfig {
        img_size: 8,
        patch_size: 4,
        in_chans: 1,
        embed_dim: 8,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        num_classes: 3,
        global_pool,
        ..VitConfig::default()
    }
}

fn batch(seed: u64) -> (Tensor, Vec<usize>) {
    let mut rng = Rng::seed(seed);
    let x = Tensor::rand(&[4, 1, 8, 8], 0.0, 1.0, &mut rng);
    (x, (0..4).map(|_| rng.below(3)).collect())
}

fn train_config() -> TrainConfig {
    TrainConfig {
        warmup_steps: 2,
        total_steps: 10,
        batch_size: 4,
        seed: 7,
        ..TrainConfig::default()
    }
}

#[test]
fn a_run_saved_and_resumed_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let model = VisionTransformer::new(tiny(GlobalPool::Token), &mut Rng::seed(0)).unwrap();
    let mut straight = Trainer::new(model, train_config()).unwrap();
    for s in 0..2 {
        let (x, y) = batch(s);
        straight.step(&x, &y).unwrap();
    }
    straight.progress.epoch = 1;
    straight.progress.position = 2;
    let extra = HashMap::from([("data.name".to_string(), "noise".to_string())]);
    straight.save(&path, &extra).unwrap();
    // One entry each for the kind, the configuration and the progress, and the extras.
    let meta = SafeTensorsFile::open(&path).unwrap().metadata().unwrap();
    let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["config", "data.name", "model", "train_state"]);
    assert_eq!(meta["model"], "tessera-vit");
    let config: CheckpointConfig = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(config.model, tiny(GlobalPool::Token));
    assert_eq!(config.train, Some(train_config()));
    let progress: TrainProgress = serde_json::from_str(&meta["train_state"]).unwrap();
    assert_eq!(
        (progress.step, progress.epoch, progress.position),
        (2, 1, 2)
    );

    let (mut resumed, meta) = Trainer::resume(&path).unwrap();
    assert_eq!(meta["data.name"], "noise");
    assert_eq!(resumed.progress, straight.progress);
    assert_eq!(resumed.config, straight.config);
    for s in 2..4 {
        let (x, y) = batch(s);
        let a = straight.step(&x, &y).unwrap();
        let b = resumed.step(&x, &y).unwrap();
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {s}");
    }
    let theirs: HashMap<String, Tensor> = resumed.model.vars().tensors().into_iter().collect();
    for (name, t) in straight.model.vars().tensors() {
        assert_eq!(Some(&t), theirs.get(&name), "{name}");
    }
    // A model file is not a training checkpoint.
    let model_path = dir.path().join("model.safetensors");
    save_model(&straight.model, &model_path, &HashMap::new()).unwrap();
    let err = Trainer::resume(&model_path).err().unwrap().to_string();
    assert!(err.contains("not a training checkpoint"), "{err}");
    let (model, _) = load_model(&path).unwrap();
    assert_eq!(model.config(), straight.model.config());
}

#[test]
fn a_checkpoint_of_an_earlier_version_is_refused_clearly_and_left_alone() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy_checkpoint.safetensors");
    let before = std::fs::read(&path).unwrap();
    let listing = || {
        let mut v: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let files = listing();
    let err = load_model(&path).err().unwrap().to_string();
    assert!(
        err.contains("legacy_checkpoint.safetensors") && err.contains("earlier version"),
        "{err}"
    );
    let err = Trainer::resume(&path).err().unwrap().to_string();
    assert!(err.contains("earlier version"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
    assert_eq!(listing(), files, "nothing was written beside it");
}

#[test]
fn a_file_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    let meta = HashMap::from([("model".to_string(), "tessera-rnn".to_string())]);
    tessera_tensor::save_safetensors(&path, [("w", &Tensor::zeros(&[2]))], Some(&meta)).unwrap();
    let err = load_model(&path).err().unwrap().to_string();
    assert!(err.contains("not a Vision Transformer checkpoint"), "{err}");
}

#[test]
fn a_non_finite_loss_is_the_optimizers_error_and_changes_nothing() {
    let model = VisionTransformer::new(tiny(GlobalPool::Avg), &mut Rng::seed(0)).unwrap();
    let mut trainer = Trainer::new(model, train_config()).unwrap();
    let bias = trainer.model.vars().parameter("head.bias").unwrap();
    bias.set(Tensor::full(&[3], f32::NAN)).unwrap();
    let before = trainer.model.vars().tensors();
    let (x, y) = batch(0);
    match trainer.step(&x, &y) {
        Err(Error::Optim(tessera_optim::Error::NonFiniteLoss { step: 1, .. })) => {}
        other => panic!("expected NonFiniteLoss at step 1, got {other:?}"),
    }
    assert_eq!(trainer.progress.step, 0);
    for ((n, a), (_, b)) in before.iter().zip(trainer.model.vars().tensors()) {
        assert_eq!(
            a.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{n}"
        );
    }
}

#[test]
fn names_are_timms_by_construction_and_a_new_head_takes_the_old_ones_place() {
    let mut model = VisionTransformer::new(tiny(GlobalPool::Avg), &mut Rng::seed(0)).unwrap();
    let names = model.vars().names();
    assert_eq!(names.first().unwrap(), "patch_embed.proj.weight");
    assert!(!names
        .iter()
        .any(|n| n == "cls_token" || n.starts_with("norm.")));
    assert!(names.contains(&"fc_norm.weight".to_string()));
    assert!(names.contains(&"blocks.1.mlp.fc2.bias".to_string()));
    model.reset_head(5, &mut Rng::seed(1)).unwrap();
    assert_eq!(
        model
            .vars()
            .parameter("head.weight")
            .unwrap()
            .value()
            .shape(),
        &[5, 8]
    );
    assert_eq!(model.num_parameters(), model.config().num_parameters());
    model.reset_head(0, &mut Rng::seed(1)).unwrap();
    assert!(model.vars().parameter("head.weight").is_none());
    let x = Tensor::zeros(&[2, 1, 8, 8]);
    assert_eq!(model.forward(&x, false).unwrap().shape(), &[2, 8]);
}

#[test]
fn building_for_a_load_draws_nothing_and_names_the_same_tensors() {
    let c = tiny(GlobalPool::Token);
    let drawn = VisionTransformer::new(c, &mut Rng::seed(0)).unwrap();
    let vars = VarMap::new();
    let zeros = VisionTransformer::build(&VarBuilder::zeros(&vars), c).unwrap();
    assert_eq!(zeros.vars().names(), drawn.vars().names());
    for (n, p) in zeros.named_parameters() {
        assert!(p.value().to_vec().iter().all(|&v| v == 0.0), "{n}");
    }
}

#[test]
fn presets_answer_to_timms_names_and_the_papers() {
    for p in VitConfig::presets() {
        let c = (p.config)();
        c.validate().unwrap();
        assert_eq!(VitConfig::preset(p.name).unwrap(), c);
        assert_eq!(VitConfig::preset(p.short).unwrap(), c);
        assert!(p.name.ends_with(&format!("_{}", c.img_size)), "{}", p.name);
    }
    assert_eq!(
        VitConfig::preset("b/16").unwrap(),
        VitConfig::vit_base_patch16_224()
    );
    assert_eq!(VitConfig::default(), VitConfig::vit_base_patch16_224());
    let err = VitConfig::preset("B/8").unwrap_err().to_string();
    assert!(
        err.contains("unknown preset") && err.contains("H/14"),
        "{err}"
    );
}

#[test]
fn configs_read_back_from_json_with_timms_names() {
    let c = VitConfig {
        mlp_dim: Some(100),
        hybrid: Some(tessera_vit::Hybrid {
            width: 8,
            stages: 1,
        }),
        ..tiny(GlobalPool::Avg)
    };
    let text = serde_json::to_string(&c).unwrap();
    assert!(
        text.contains("\"global_pool\":\"avg\"") && text.contains("\"num_heads\":2"),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<VitConfig>(&text).unwrap(), c);
    assert_eq!(c.mlp_hidden_dim(), 100);
}

/// `cargo test -p tessera-vit --release -- --ignored --nocapture build_time`: how long
/// ViT-B/16 takes to build, drawn and for a load.
#[test]
#[ignore]
fn build_time_of_vit_base_patch16_224() {
    let c = VitConfig::vit_base_patch16_224();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let m = VisionTransformer::new(c, &mut Rng::seed(0)).unwrap();
        let drawn = t.elapsed().as_secs_f64();
        drop(m);
        let t = std::time::Instant::now();
        let vars = VarMap::new();
        let m = VisionTransformer::build(&VarBuilder::zeros(&vars), c).unwrap();
        let zeros = t.elapsed().as_secs_f64();
        drop(m);
        println!("ViT-B/16: new {drawn:.3} s, built for a load {zeros:.3} s");
    }
    // What the draws alone cost: the MLPs' truncated normals, the attention's uniforms.
    let mlp = 12 * 2 * 768 * 3072;
    let t = std::time::Instant::now();
    tessera_nn::init::trunc_normal(&[mlp], 0.02, &mut Rng::seed(0)).unwrap();
    let trunc = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    Tensor::rand(&[12 * 4 * 768 * 768], -0.05, 0.05, &mut Rng::seed(0));
    let uniform = t.elapsed().as_secs_f64();
    println!(
        "trunc_normal of {mlp} values {trunc:.3} s; uniform of the attention's {uniform:.3} s"
    );
}

/// Found by `tessera-fuzz` (`--parser model-load`): a `config` entry describing a model
/// far larger than the file made `load_model` and `Trainer::resume` build it (terabytes)
/// before comparing it with the file; now it is an error first.
#[test]
fn a_configuration_larger_than_its_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = VisionTransformer::new(tiny(GlobalPool::Token), &mut Rng::seed(0)).unwrap();
    let path = dir.path().join("model.safetensors");
    save_model(&model, &path, &HashMap::new()).unwrap();
    let edited = dir.path().join("edited.safetensors");
    tessera_testutil::rewrite_metadata(&path, &edited, |meta| {
        let mut stored: CheckpointConfig = serde_json::from_str(&meta["config"]).unwrap();
        stored.model.embed_dim = 1 << 30;
        meta.insert("config".into(), serde_json::to_string(&stored).unwrap());
    });
    let err = load_model(&edited).unwrap_err().to_string();
    assert!(
        err.contains("larger than the file") && err.contains("1073741824"),
        "{err}"
    );
    assert!(load_model(&path).is_ok());
}
