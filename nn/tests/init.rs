//! Initialisers: the bounds and spreads torch.nn.init gives, and seeded reproducibility.

use tessera_nn::init::{
    fans, kaiming_normal, kaiming_uniform, trunc_normal, xavier_normal, xavier_uniform,
};
use tessera_tensor::Rng;

fn std(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
}

#[test]
fn fans_follow_pytorch() {
    assert_eq!(fans(&[64, 32]).unwrap(), (32, 64));
    assert_eq!(fans(&[16, 3, 5, 5]).unwrap(), (75, 400));
    assert!(fans(&[7]).is_err());
}

#[test]
fn bounds_and_spreads() {
    let shape = [200, 300];
    // Xavier uniform: U(±√(6/500)) = ±0.1095; std = bound/√3.
    let w = xavier_uniform(&shape, 1.0, &mut Rng::seed(1))
        .unwrap()
        .to_vec();
    let bound = (6.0f64 / 500.0).sqrt();
    assert!(w.iter().all(|&x| (x as f64).abs() <= bound + 1e-7));
    assert!((std(&w) - bound / 3f64.sqrt()).abs() < 2e-3);
    // Xavier normal: std √(2/500).
    let w = xavier_normal(&shape, 1.0, &mut Rng::seed(2))
        .unwrap()
        .to_vec();
    assert!((std(&w) - (2.0f64 / 500.0).sqrt()).abs() < 2e-3);
    // Kaiming uniform with a = √5 (PyTorch's Linear default): ±1/√fan_in.
    let w = kaiming_uniform(&shape, 5f32.sqrt(), &mut Rng::seed(3))
        .unwrap()
        .to_vec();
    assert!(w
        .iter()
        .all(|&x| (x as f64).abs() <= 1.0 / 300f64.sqrt() + 1e-7));
    // Kaiming normal: std √(2/fan_in).
    let w = kaiming_normal(&shape, &mut Rng::seed(4)).unwrap().to_vec();
    assert!((std(&w) - (2.0f64 / 300.0).sqrt()).abs() < 2e-3);
    // timm's trunc_normal(0.02).
    let w = trunc_normal(&shape, 0.02, &mut Rng::seed(5))
        .unwrap()
        .to_vec();
    assert!((std(&w) - 0.02).abs() < 5e-4);
    // Same seed, same numbers.
    let a = xavier_uniform(&shape, 1.0, &mut Rng::seed(9)).unwrap();
    let b = xavier_uniform(&shape, 1.0, &mut Rng::seed(9)).unwrap();
    assert_eq!(a, b);
}
