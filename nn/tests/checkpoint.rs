//! Checkpoints: round trips, strict reports, PyTorch state dicts, corrupt files.

use tessera_nn::{load_checkpoint, save_checkpoint, Error, Linear, Parameter, Params};
use tessera_tensor::Rng;

/// Two linear layers named as PyTorch's `nn.Sequential(Linear(3, 2), Tanh(), Linear(2, 1))`.
struct Mlp {
    first: Linear,
    second: Linear,
}

impl Params for Mlp {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        let p = |i: &str| {
            if prefix.is_empty() {
                i.to_string()
            } else {
                format!("{prefix}.{i}")
            }
        };
        self.first.collect_params(&p("0"), out);
        self.second.collect_params(&p("2"), out);
    }
}

fn mlp(seed: u64) -> Mlp {
    let mut rng = Rng::seed(seed);
    Mlp {
        first: Linear::new(3, 2, true, &mut rng),
        second: Linear::new(2, 1, true, &mut rng),
    }
}

#[test]
fn round_trip_and_torch_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let a = mlp(1);
    save_checkpoint(&path, &a, None).unwrap();
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
    let other = Linear::new(3, 4, true, &mut Rng::seed(3)); // "weight", "bias": both unexpected
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
    let wide = Mlp {
        first: Linear::new(3, 5, true, &mut Rng::seed(5)),
        second: Linear::new(5, 1, true, &mut Rng::seed(6)),
    };
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    let model = mlp(7);
    save_checkpoint(&path, &model, None).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    let msg = load_checkpoint(&path, &model, true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cut.safetensors"), "{msg}");
}

#[test]
fn buffers_travel_with_the_parameters() {
    use tessera_nn::{BatchNorm2d, ModuleT, Var};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bn.safetensors");
    let bn = BatchNorm2d::new(2);
    let x = Var::constant(tessera_tensor::Tensor::randn(
        &[3, 2, 4, 4],
        1.0,
        2.0,
        &mut Rng::seed(8),
    ));
    bn.forward_t(&x, true).unwrap();
    save_checkpoint(&path, &bn, None).unwrap();
    let fresh = BatchNorm2d::new(2);
    assert!(load_checkpoint(&path, &fresh, true).unwrap().is_clean());
    assert_eq!(fresh.running_mean.value(), bn.running_mean.value());
    assert_eq!(fresh.running_var.value(), bn.running_var.value());
    assert_eq!(fresh.num_batches_tracked.value().to_scalar().unwrap(), 1.0);
}
