//! Seeded random tensors: reproducible, with the right moments and support.

use tessera_tensor::{Rng, Tensor};

fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let v = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
    (m, v.sqrt())
}

#[test]
fn same_seed_same_numbers_other_seed_others() {
    let a = Tensor::rand(&[100], 0.0, 1.0, &mut Rng::seed(42));
    let b = Tensor::rand(&[100], 0.0, 1.0, &mut Rng::seed(42));
    let c = Tensor::rand(&[100], 0.0, 1.0, &mut Rng::seed(43));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn uniform_and_normal_have_their_moments() {
    let mut rng = Rng::seed(1);
    let u = Tensor::rand(&[200_000], -2.0, 4.0, &mut rng).to_vec();
    let (m, s) = mean_std(&u);
    // U(-2, 4): mean 1, std 6/√12 ≈ 1.732; standard errors ≈ 0.004 and 0.003.
    assert!(
        (m - 1.0).abs() < 0.02 && (s - 1.732).abs() < 0.02,
        "{m} {s}"
    );
    assert!(u.iter().all(|&v| (-2.0..4.0).contains(&v)));
    let g = Tensor::randn(&[200_000], 3.0, 0.5, &mut rng).to_vec();
    let (m, s) = mean_std(&g);
    assert!((m - 3.0).abs() < 0.01 && (s - 0.5).abs() < 0.01, "{m} {s}");
}

#[test]
fn trunc_normal_matches_the_truncated_distribution() {
    // N(0, 1) truncated to [-2, 2] has variance 1 - 2·2φ(2)/(Φ(2)-Φ(-2)) ≈ 0.7737.
    let x = Tensor::trunc_normal(&[200_000], 0.0, 1.0, -2.0, 2.0, &mut Rng::seed(9))
        .unwrap()
        .to_vec();
    assert!(x.iter().all(|&v| (-2.0..=2.0).contains(&v)));
    let (m, s) = mean_std(&x);
    assert!(m.abs() < 0.01, "{m}");
    assert!((s * s - 0.7737).abs() < 0.01, "{}", s * s);
    // timm's ViT default: std 0.02 with bounds ±2 (i.e. ±100σ): indistinguishable from N(0, 0.02²).
    let w = Tensor::trunc_normal(&[100_000], 0.0, 0.02, -2.0, 2.0, &mut Rng::seed(2))
        .unwrap()
        .to_vec();
    let (_, s) = mean_std(&w);
    assert!((s - 0.02).abs() < 5e-4, "{s}");
    assert!(Tensor::trunc_normal(&[1], 0.0, -1.0, -2.0, 2.0, &mut Rng::seed(0)).is_err());
    // A narrow tail, [1, 3] (16% of the mass: drawn by the inverse CDF): mean
    // (φ(1) - φ(3)) / (Φ(3) - Φ(1)) = 0.237538 / 0.157305 = 1.51005.
    let t = Tensor::trunc_normal(&[200_000], 0.0, 1.0, 1.0, 3.0, &mut Rng::seed(3))
        .unwrap()
        .to_vec();
    assert!(t.iter().all(|&v| (1.0..=3.0).contains(&v)));
    let (m, _) = mean_std(&t);
    assert!((m - 1.51005).abs() < 0.005, "{m}");
}

#[test]
fn bernoulli_mask_has_rate_p() {
    let m = Tensor::bernoulli(&[100_000], 0.9, &mut Rng::seed(4)).unwrap();
    let rate = m.mean_all().to_scalar().unwrap();
    assert!((rate - 0.9).abs() < 0.005, "{rate}");
    assert!(m.to_vec().iter().all(|&v| v == 0.0 || v == 1.0));
    assert!(Tensor::bernoulli(&[1], 1.5, &mut Rng::seed(0)).is_err());
}
