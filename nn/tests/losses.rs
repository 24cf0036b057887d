//! PyTorch's losses with their options (`weight`, `ignore_index`, `reduction`,
//! `label_smoothing`, `pos_weight`): value and input gradient against PyTorch 2.15 in 36
//! cases (fixtures from `tests/fixtures/make_losses.py`), and bad input as errors.

use serde_json::Value;
use tessera_nn::{BceWithLogitsLoss, CrossEntropyLoss, Error, MseLoss, NllLoss, Reduction, Var};
use tessera_tensor::Tensor;
use tessera_testutil::{assert_close_slice, floats, i64s, usizes};

fn reduction(v: &Value) -> Reduction {
    match v["reduction"].as_str().unwrap() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        other => panic!("reduction {other}"),
    }
}

fn tensor(values: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(values), shape).unwrap()
}

#[test]
fn values_and_gradients_equal_pytorch() {
    let all: Value = tessera_testutil::json_fixture!("losses.json");
    let cases = all["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 36);
    for (i, case) in cases.iter().enumerate() {
        let kind = case["kind"].as_str().unwrap();
        let o = &case["options"];
        let shape = usizes(&case["shape"]);
        let x = Var::parameter(tensor(&case["input"], &shape));
        let classes = [shape[shape.len() - 1]];
        let weight = |s: &[usize]| (!o["weight"].is_null()).then(|| tensor(&o["weight"], s));
        let out = match kind {
            "cross_entropy" => CrossEntropyLoss {
                weight: weight(&classes),
                ignore_index: o["ignore_index"].as_i64().unwrap(),
                reduction: reduction(o),
                label_smoothing: o["label_smoothing"].as_f64().unwrap() as f32,
            }
            .forward(&x, &i64s(&case["targets"])),
            "nll_loss" => NllLoss {
                weight: weight(&classes),
                ignore_index: o["ignore_index"].as_i64().unwrap(),
                reduction: reduction(o),
            }
            .forward(&x, &i64s(&case["targets"])),
            "bce_with_logits" => {
                let weight_shape: Vec<usize> = o["weight_shape"]
                    .as_array()
                    .map(|a| a.iter().map(|d| d.as_u64().unwrap() as usize).collect())
                    .unwrap_or_default();
                BceWithLogitsLoss {
                    weight: weight(&weight_shape),
                    pos_weight: (!o["pos_weight"].is_null())
                        .then(|| tensor(&o["pos_weight"], &classes)),
                    reduction: reduction(o),
                }
                .forward(&x, &tensor(&case["targets"], &shape))
            }
            "mse_loss" => MseLoss {
                reduction: reduction(o),
            }
            .forward(&x, &Var::constant(tensor(&case["targets"], &shape))),
            other => panic!("case {i}: kind {other}"),
        }
        .unwrap_or_else(|e| panic!("case {i} ({kind}, {o}): {e}"));
        let what = format!("case {i} ({kind}, {o})");
        assert_close_slice(&what, out.value(), &floats(&case["value"]), 1e-6, 1e-5);
        let upstream = floats(&case["upstream"]);
        let g = Tensor::from_vec(upstream, out.shape()).unwrap();
        out.backward_with(g).unwrap();
        let grad = x.grad().unwrap();
        assert_close_slice(
            &format!("{what}: gradient"),
            &grad,
            &floats(&case["grad"]),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn bad_targets_weights_and_shapes_are_errors_naming_them() {
    let logits = Var::constant(Tensor::zeros(&[3, 4]));
    let text = |e: Error| e.to_string();
    let ce = CrossEntropyLoss::default();
    let e = ce.forward(&logits, &[0, 4, 1]).unwrap_err();
    assert_eq!(
        text(e),
        "CrossEntropyLoss: target 4 of row 1 is outside 4 classes"
    );
    let e = ce.forward(&logits, &[0, -1, 1]).unwrap_err();
    assert!(text(e).contains("target -1 of row 1"));
    let e = ce.forward(&logits, &[0, 1]).unwrap_err();
    assert!(text(e).contains("3 targets"), "count");
    let e = ce.forward(&logits, &[-100, -100, -100]).unwrap_err();
    assert!(text(e).contains("ignore_index = -100"), "all ignored");
    // With a sum, a batch of ignored rows is 0, as in PyTorch.
    let sum = CrossEntropyLoss {
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let zero = sum.forward(&logits, &[-100, -100, -100]).unwrap();
    assert_eq!(zero.value().to_scalar().unwrap(), 0.0);
    let weighted = CrossEntropyLoss {
        weight: Some(Tensor::ones(&[3])),
        ..Default::default()
    };
    let e = weighted.forward(&logits, &[0, 1, 2]).unwrap_err();
    assert!(text(e).contains("a weight of [4] (one per class)"));
    let smooth = CrossEntropyLoss {
        label_smoothing: 1.5,
        ..Default::default()
    };
    assert!(text(smooth.forward(&logits, &[0, 1, 2]).unwrap_err()).contains("within [0, 1]"));
    let e = NllLoss::default().forward(&logits, &[0, 9, 1]).unwrap_err();
    assert!(text(e).contains("NLLLoss: target 9 of row 1"));
    let bce = BceWithLogitsLoss {
        pos_weight: Some(Tensor::ones(&[3])),
        ..Default::default()
    };
    let e = bce.forward(&logits, &Tensor::zeros(&[3, 4])).unwrap_err();
    assert!(text(e).contains("a pos_weight of [4]"));
    let e = BceWithLogitsLoss::default()
        .forward(&logits, &Tensor::zeros(&[4, 3]))
        .unwrap_err();
    assert!(text(e).contains("targets of the logits' shape [3, 4]"));
}
