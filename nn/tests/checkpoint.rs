//! Checkpoints: round trips, strict reports, PyTorch state dicts, corrupt files.

use std::path::PathBuf;

use tessera_nn::{load_checkpoint, save_checkpoint, Error, Linear, Params, VarMap};
use tessera_tensor::Rng;

/// Two linear layers named as PyTorch's `nn.Sequential(Linear(3, 2), Tanh(), Linear(2, 1))`.
struct Mlp {
    first: Linear,
    second: Linear,
    vars: VarMap,
}

impl Params for Mlp {
    fn vars(&self) -> &VarMap {
        &self.vars
    }
}

fn mlp_of(widths: [usize; 3], rng: &mut Rng) -> Mlp {
    let ((first, second), vars) = VarMap::build(rng, |vb| {
        Ok((
            Linear::new(&vb.pp("0"), widths[0], widths[1], true)?,
            Linear::new(&vb.pp("2"), widths[1], widths[2], true)?,
        ))
    })
    .unwrap();
    Mlp {
        first,
        second,
        vars,
    }
}

fn mlp(seed: u64) -> Mlp {
    mlp_of([3, 2, 1], &mut Rng::seed(seed))
}

/// `mlp(seed)` saved as `name` in a new temporary folder: the model, the folder and the
/// file's path.
fn saved_mlp(seed: u64, name: &str) -> (Mlp, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let model = mlp(seed);
    save_checkpoint(&path, &model, None).unwrap();
    (model, dir, path)
}

#[test]
fn round_trip_and_torch_state_dict() {
    let (a, _dir, path) = saved_mlp(1, "mlp.safetensors");
    let b = mlp(2);
    assert!(load_checkpoint(&path, &b, true).unwrap().is_clean());
    for ((na, pa), (nb, pb)) in a.named_parameters().iter().zip(b.named_parameters()) {
        assert_eq!(na, &nb);
        assert_eq!(pa.value(), pb.value());
    }
    // A state dict written by PyTorch (tests/fixtures/make_fixtures.py) loads as is.
    let torch = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/linear_state_dict.safetensors"
    );
    assert!(load_checkpoint(torch, &b, true).unwrap().is_clean());
}

#[test]
fn strict_loading_reports_everything_sorted_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    // "weight", "bias": both unexpected.
    let (_, other) = VarMap::build(&mut Rng::seed(3), |vb| Linear::new(vb, 3, 4, true)).unwrap();
    save_checkpoint(&path, &other, None).unwrap();
    let model = mlp(4);
    let before = model.first.weight.value();
    let err = load_checkpoint(&path, &model, true).unwrap_err();
    let Error::Checkpoint { report, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(report.missing, ["0.bias", "0.weight", "2.bias", "2.weight"]);
    assert_eq!(report.unexpected, ["bias", "weight"]);
    assert!(
        err.to_string().contains("missing keys: 0.bias, 0.weight"),
        "{err}"
    );
    assert_eq!(model.first.weight.value(), before);
    // Shape mismatches name both shapes; non-strict loading returns the report.
    let wide = mlp_of([3, 5, 1], &mut Rng::seed(5));
    save_checkpoint(&path, &wide, None).unwrap();
    let report = load_checkpoint(&path, &model, false).unwrap();
    assert_eq!(
        report.mismatched[0],
        ("0.bias".to_string(), vec![2], vec![5])
    );
    assert_eq!(report.mismatched.len(), 3);
    assert_eq!(
        model.second.bias.as_ref().unwrap().value(),
        wide.second.bias.as_ref().unwrap().value()
    );
}

#[test]
fn truncated_file_is_a_clear_error() {
    let (model, _dir, path) = saved_mlp(7, "cut.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    let msg = load_checkpoint(&path, &model, true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cut.safetensors"), "{msg}");
}

#[test]
fn buffers_travel_with_the_parameters() {
    use tessera_nn::{BatchNorm2d, Module, Var};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bn.safetensors");
    let (bn, vars) = VarMap::build(&mut Rng::seed(0), |vb| BatchNorm2d::new(vb, 2)).unwrap();
    let x = Var::constant(tessera_tensor::Tensor::randn(
        &[3, 2, 4, 4],
        1.0,
        2.0,
        &mut Rng::seed(8),
    ));
    bn.forward_t(&x, true).unwrap();
    save_checkpoint(&path, &vars, None).unwrap();
    let (fresh, fresh_vars) =
        VarMap::build(&mut Rng::seed(0), |vb| BatchNorm2d::new(vb, 2)).unwrap();
    assert!(load_checkpoint(&path, &fresh_vars, true)
        .unwrap()
        .is_clean());
    assert_eq!(fresh.running_mean.value(), bn.running_mean.value());
    assert_eq!(fresh.running_var.value(), bn.running_var.value());
    assert_eq!(fresh.num_batches_tracked.value().to_scalar().unwrap(), 1.0);
}

#[test]
fn non_finite_weights_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let bad = mlp(1);
    let mut weight = bad.second.weight.value().to_vec();
    weight[1] = f32::NAN;
    bad.second
        .weight
        .set(tessera_tensor::Tensor::from_vec(weight, &[1, 2]).unwrap())
        .unwrap();
    save_checkpoint(&path, &bad, None).unwrap();
    let target = mlp(2);
    let before: Vec<_> = target
        .named_parameters()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect();
    for strict in [true, false] {
        let err = load_checkpoint(&path, &target, strict).unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { name, count: 1, index: 1, .. } if name == "2.weight"),
            "{err}"
        );
        assert!(err.to_string().contains("non-finite"), "{err}");
    }
    let after: Vec<_> = target
        .named_parameters()
        .iter()
        .map(|(_, p)| p.value().to_vec())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn sizes_beyond_memory_are_errors_not_aborts() {
    let vars = VarMap::new();
    let vb = tessera_nn::VarBuilder::zeros(&vars);
    let layer = vb.pp("layer");
    for shape in [[1usize << 20, 1 << 20], [1 << 40, 1 << 40]] {
        let err = layer
            .param("weight", &shape, tessera_nn::Init::Zeros)
            .unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { name, shape: s, .. } if name == "layer.weight" && s == &shape),
            "{err}"
        );
        assert!(err.to_string().contains("more than the"), "{err}");
    }
    let big = layer.param("weight", &[1 << 20, 1 << 20], tessera_nn::Init::Zeros);
    assert!(big.unwrap_err().to_string().contains("4.4 TB"));
    assert!(
        vars.names().is_empty(),
        "a refused parameter is not registered"
    );
    assert!(layer
        .param("weight", &[2, 3], tessera_nn::Init::Zeros)
        .is_ok());
}
