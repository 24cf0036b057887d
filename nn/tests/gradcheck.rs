//! Finite-difference checks of every layer's backward pass with respect to its input
//! (the parameters' gradients, and Embedding, whose input is indices, are checked against
//! PyTorch in `layers.rs`).

use tessera_autograd::{check_gradients, GradCheck};
use tessera_nn::{
    Activation, AttnMask, AttnNames, BatchNorm2d, Conv2d, LayerNorm, Linear, MaxPool2d, Module,
    MultiHeadAttention, Var, VarBuilder, VarMap,
};
use tessera_tensor::{Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut Rng::seed(seed))
}

fn check(f: impl Fn(&Var) -> tessera_nn::Result<Var>, x: Tensor) {
    let res = check_gradients(
        |v| {
            f(&v[0]).map_err(|e| match e {
                tessera_nn::Error::Autograd(a) => a,
                other => panic!("{other}"),
            })
        },
        &[x],
        GradCheck::default(),
    );
    if let Err(e) = res {
        panic!("{e}");
    }
}

#[test]
fn every_layer_passes_a_finite_difference_check() {
    let vb = VarBuilder::from_rng(&VarMap::new(), Rng::seed(1));
    let lin = Linear::new(&vb.pp("lin"), 5, 3, true).unwrap();
    check(|x| lin.forward(x), randn(&[4, 5], 2));
    let ln = LayerNorm::new(&vb.pp("ln"), 6, 1e-5).unwrap();
    ln.weight.set(randn(&[6], 3)).unwrap();
    check(|x| ln.forward(x), randn(&[2, 6], 4));
    let conv = Conv2d::new(&vb.pp("conv"), 2, 3, 3, 2, 1, true).unwrap();
    check(|x| conv.forward(x), randn(&[1, 2, 5, 4], 5));
    let distinct = Tensor::arange(0.0, 32.0, 1.0)
        .unwrap()
        .map(|v| ((v * 13.0) % 32.0) * 0.1);
    check(
        |x| MaxPool2d::new(2, 2).forward(x),
        distinct.reshape(&[1, 2, 4, 4]).unwrap(),
    );
    let bn = BatchNorm2d::new(&vb.pp("bn"), 2).unwrap();
    check(|x| bn.forward_t(x, true), randn(&[3, 2, 2, 2], 6));
    let mha = MultiHeadAttention::new(&vb.pp("mha"), 4, 2, AttnNames::Torch).unwrap();
    let causal = AttnMask::causal(3);
    check(
        |x| Ok(mha.forward_qkv(x, x, x, Some(&causal), None, false)?.0),
        randn(&[1, 3, 4], 7),
    );
    for act in [
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Tanh,
        Activation::Sigmoid,
    ] {
        let x = randn(&[7], 8).map(|v| if v.abs() < 0.1 { v + 0.3 } else { v });
        check(|x| act.forward(x), x);
    }
}
