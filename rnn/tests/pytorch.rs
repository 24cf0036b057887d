//! `Recurrent` against PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`: outputs, final states
//! and the gradients of every parameter, the input and the initial state
//! (fixtures from `tests/fixtures/make_fixtures.py`).

use tessera_autograd::Var;
use tessera_nn::Params;
use tessera_rnn::{Mode, Recurrent, RecurrentConfig, State};
use tessera_tensor::{Rng, SafeTensorsFile, Tensor};
use tessera_testutil::Tolerance;

fn fixture(name: &str) -> SafeTensorsFile {
    tessera_testutil::safetensors_fixture!(&format!("{name}.safetensors"))
}

/// Within 1e-5 + 1e-4 |PyTorch's value|.
#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    tessera_testutil::assert_close(what, got, want, 1e-5, 1e-4);
}

fn check(name: &str) {
    check_path(name, false);
    check_path(name, true);
}

/// The fused path (`forward`) or the cell-by-cell one (`forward_stepwise`).
fn check_path(name: &str, stepwise: bool) {
    let name = &format!("{name}{}", if stepwise { " (stepwise)" } else { "" });
    let file_name = name.split(' ').next().unwrap();
    let file = fixture(file_name);
    let meta = file.metadata().unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    let mode = match (cfg["kind"].as_str().unwrap(), cfg["nonlinearity"].as_str()) {
        ("RNN", Some("relu")) => Mode::RnnRelu,
        ("RNN", _) => Mode::RnnTanh,
        ("LSTM", _) => Mode::Lstm,
        ("GRU", _) => Mode::Gru,
        (k, _) => panic!("unknown kind {k}"),
    };
    let config = RecurrentConfig {
        num_layers: cfg["num_layers"].as_u64().unwrap() as usize,
        batch_first: cfg["batch_first"].as_bool().unwrap_or(false),
        bidirectional: cfg["bidirectional"].as_bool().unwrap_or(false),
        ..RecurrentConfig::new(
            mode,
            cfg["input_size"].as_u64().unwrap() as usize,
            cfg["hidden_size"].as_u64().unwrap() as usize,
        )
    };
    let model = Recurrent::new(config, &mut Rng::seed(0)).unwrap();
    let params = model.named_parameters();
    let file_params: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| n.starts_with("weight_") || n.starts_with("bias_"))
        .collect();
    assert_eq!(params.len(), file_params.len(), "{name}: parameter count");
    for (pname, p) in &params {
        p.set(
            file.get(pname)
                .unwrap_or_else(|e| panic!("{name}: {pname}: {e}")),
        )
        .unwrap();
    }
    let x = Var::parameter(file.get("x").unwrap());
    let h0 = Var::parameter(file.get("h0").unwrap());
    let c0 = (mode == Mode::Lstm).then(|| Var::parameter(file.get("c0").unwrap()));
    let state = match &c0 {
        Some(c) => State::Lstm {
            h: h0.clone(),
            c: c.clone(),
        },
        None => State::Hidden(h0.clone()),
    };
    let out = if stepwise {
        model.forward_stepwise(&x, Some(&state)).unwrap()
    } else {
        model.forward(&x, Some(&state)).unwrap()
    };
    assert_close(
        &format!("{name} out"),
        out.output.value(),
        &file.get("out").unwrap(),
    );
    assert_close(
        &format!("{name} hn"),
        out.state.h().value(),
        &file.get("hn").unwrap(),
    );
    let weighted = |v: &Var, w: &str| {
        v.mul(&Var::constant(file.get(w).unwrap()))
            .unwrap()
            .sum_all()
    };
    let mut loss = weighted(&out.output, "w_out")
        .add(&weighted(out.state.h(), "w_h"))
        .unwrap();
    if let State::Lstm { c, .. } = &out.state {
        assert_close(&format!("{name} cn"), c.value(), &file.get("cn").unwrap());
        loss = loss.add(&weighted(c, "w_c")).unwrap();
    }
    loss.backward().unwrap();
    tessera_testutil::assert_grads_close(name, &params, &file, Tolerance::new(1e-5, 1e-4));
    assert_close(
        &format!("{name} grad x"),
        &x.grad().unwrap(),
        &file.get("grad.x").unwrap(),
    );
    assert_close(
        &format!("{name} grad h0"),
        &h0.grad().unwrap(),
        &file.get("grad.h0").unwrap(),
    );
    if let Some(c0) = &c0 {
        assert_close(
            &format!("{name} grad c0"),
            &c0.grad().unwrap(),
            &file.get("grad.c0").unwrap(),
        );
    }
}

#[test]
fn rnn_tanh_two_layers_batch_first_matches_pytorch() {
    check("rnn_tanh");
}

#[test]
fn rnn_relu_bidirectional_matches_pytorch() {
    check("rnn_relu_bidir");
}

#[test]
fn lstm_two_layers_matches_pytorch() {
    check("lstm");
}

#[test]
fn lstm_bidirectional_batch_first_matches_pytorch() {
    check("lstm_bidir");
}

#[test]
fn gru_two_layers_batch_first_matches_pytorch() {
    check("gru");
}

#[test]
fn gru_bidirectional_matches_pytorch() {
    check("gru_bidir");
}

#[test]
fn a_pytorch_state_dict_loads_by_name() {
    // The fixture files hold the state_dict under PyTorch's names: a non-strict load
    // fills every parameter and reports only the extra tensors.
    let path = tessera_testutil::fixture_path!("lstm_bidir.safetensors");
    let config = RecurrentConfig {
        num_layers: 2,
        bidirectional: true,
        batch_first: true,
        ..RecurrentConfig::new(Mode::Lstm, 3, 4)
    };
    let model = Recurrent::new(config, &mut Rng::seed(1)).unwrap();
    let report = tessera_nn::load_checkpoint(&path, &model, false).unwrap();
    assert!(
        report.missing.is_empty() && report.mismatched.is_empty(),
        "{report}"
    );
    let file = fixture("lstm_bidir");
    assert_close(
        "bias_hh_l1_reverse",
        &model.named_parameters()[15].1.value(),
        &file.get("bias_hh_l1_reverse").unwrap(),
    );
    assert_eq!(model.named_parameters()[15].0, "bias_hh_l1_reverse");
}

#[test]
fn wrong_shapes_are_errors_that_say_what_was_expected() {
    let config = RecurrentConfig {
        batch_first: true,
        ..RecurrentConfig::new(Mode::Gru, 3, 4)
    };
    let model = Recurrent::new(config, &mut Rng::seed(1)).unwrap();
    let x = Var::constant(Tensor::zeros(&[2, 5, 7]));
    let err = model.forward(&x, None).unwrap_err().to_string();
    assert!(
        err.contains("[B, T, 3]") && err.contains("[2, 5, 7]"),
        "{err}"
    );
    let x = Var::constant(Tensor::zeros(&[2, 5, 3]));
    let bad = State::Hidden(Var::constant(Tensor::zeros(&[1, 3, 4])));
    let err = model.forward(&x, Some(&bad)).unwrap_err().to_string();
    assert!(err.contains("[1, 2, 4]"), "{err}");
}
