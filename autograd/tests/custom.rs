//! Custom operations: their backward rule is used, checked against finite differences,
//! and a rule that returns gradients of the wrong number or shape is an error.

use std::sync::Arc;

use tessera_autograd::{check_gradients, Function, GradCheck, Result, Var};
use tessera_tensor::{Rng, Tensor};

/// `y = a ⊙ b + sin(a)`, derived by hand: `∂a = g (b + cos a)`, `∂b = g a`.
#[derive(Debug)]
struct MulSin {
    a: Tensor,
    b: Tensor,
}

impl Function for MulSin {
    fn name(&self) -> &'static str {
        "mul_sin"
    }
    fn backward(&self, g: &Tensor, _y: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let cos = Tensor::from_vec(
            self.a.to_vec().iter().map(|v| v.cos()).collect(),
            self.a.shape(),
        )?;
        Ok(vec![
            Some(g.mul(&self.b.add(&cos)?)?),
            Some(g.mul(&self.a)?),
        ])
    }
}

fn mul_sin(a: &Var, b: &Var) -> Var {
    let sin = Tensor::from_vec(
        a.value().to_vec().iter().map(|v| v.sin()).collect(),
        a.shape(),
    )
    .unwrap();
    let y = a.value().mul(b.value()).unwrap().add(&sin).unwrap();
    Var::custom(
        y,
        &[a.clone(), b.clone()],
        Arc::new(MulSin {
            a: a.value().clone(),
            b: b.value().clone(),
        }),
    )
}

#[test]
fn a_custom_rule_passes_the_finite_difference_check() {
    let mut rng = Rng::seed(3);
    let a = Tensor::randn(&[3, 4], 0.0, 1.0, &mut rng);
    let b = Tensor::randn(&[3, 4], 0.0, 1.0, &mut rng);
    check_gradients(
        |v| Ok(mul_sin(&v[0], &v[1]).tanh()),
        &[a, b],
        GradCheck::default(),
    )
    .unwrap();
}

#[derive(Debug)]
struct Wrong(usize, Vec<usize>);

impl Function for Wrong {
    fn name(&self) -> &'static str {
        "wrong"
    }
    fn backward(&self, _g: &Tensor, _y: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok((0..self.0).map(|_| Some(Tensor::zeros(&self.1))).collect())
    }
}

#[test]
fn gradients_that_do_not_fit_the_inputs_are_errors() {
    let x = Var::parameter(Tensor::zeros(&[2, 3]));
    let y = Var::custom(
        Tensor::zeros(&[2, 3]),
        std::slice::from_ref(&x),
        Arc::new(Wrong(2, vec![2, 3])),
    );
    let err = y.sum_all().backward().unwrap_err().to_string();
    assert!(
        err.contains("wrong") && err.contains("2 gradients for 1 inputs"),
        "{err}"
    );
    let y = Var::custom(
        Tensor::zeros(&[2, 3]),
        std::slice::from_ref(&x),
        Arc::new(Wrong(1, vec![3, 2])),
    );
    let err = y.sum_all().backward().unwrap_err().to_string();
    assert!(err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");
}
