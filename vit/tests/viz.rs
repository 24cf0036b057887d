//! The paper's pictures: checks of their content against values known in advance.

use tessera_nn::Params;
use tessera_tensor::{Rng, Tensor};
use tessera_vit::{viz, VisionTransformer, VitConfig};

fn small(image: usize, patch: usize) -> VisionTransformer {
    let c = VitConfig {
        img_size: image,
        patch_size: patch,
        embed_dim: 16,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        num_classes: 3,
        ..VitConfig::preset("Ti/16").unwrap()
    };
    VisionTransformer::new(c, &mut Rng::seed(3)).unwrap()
}

/// Zero query and key projections: every score is 0, so attention is uniform.
fn make_attention_uniform(model: &VisionTransformer) {
    for (name, p) in model.named_parameters() {
        if name.ends_with("attn.qkv.weight") || name.ends_with("attn.qkv.bias") {
            let v = p.value();
            let rows = v.shape()[0];
            let per_row: usize = v.shape()[1..].iter().product();
            let mut data = v.to_vec();
            for x in &mut data[..2 * rows / 3 * per_row] {
                *x = 0.0;
            }
            p.set(Tensor::from_vec(data, v.shape()).unwrap()).unwrap();
        }
    }
}

#[test]
fn each_patch_is_most_similar_to_itself() {
    let model = small(16, 4);
    let sim = viz::position_similarity(&model).unwrap();
    assert_eq!(sim.shape(), &[4, 4, 4, 4]);
    let v = sim.to_vec();
    for p in 0..16 {
        let tile = &v[p * 16..(p + 1) * 16];
        assert!((tile[p] - 1.0).abs() < 1e-5, "self-similarity {}", tile[p]);
        for (q, &s) in tile.iter().enumerate() {
            assert!(s <= tile[p] + 1e-6, "patch {p}: {q} is more similar ({s})");
        }
    }
    let img = viz::position_similarity_image(&model, 3).unwrap();
    assert_eq!(img.shape(), &[3, 4 * 12 + 3, 4 * 12 + 3]);
}

#[test]
fn uniform_attention_has_the_grids_mean_distance_and_a_flat_rollout() {
    // A 2 x 2 grid of 4-pixel patches: from any patch the others are 0, 4, 4 and 4√2
    // pixels away, so uniform attention has a mean distance of (8 + 4√2) / 4.
    let model = small(8, 4);
    make_attention_uniform(&model);
    let images = Tensor::rand(&[2, 3, 8, 8], 0.0, 1.0, &mut Rng::seed(5));
    let d = viz::mean_attention_distance(&model, &images).unwrap();
    assert_eq!(d.len(), 2);
    let want = (8.0 + 4.0 * 2f32.sqrt()) / 4.0;
    for (layer, heads) in d.iter().enumerate() {
        assert_eq!(heads.len(), 2);
        for &h in heads {
            assert!((h - want).abs() < 1e-4, "layer {layer}: {h} vs {want}");
        }
    }
    let map = viz::attention_rollout(&model, &images.narrow(0, 0, 1).unwrap().squeeze(0).unwrap())
        .unwrap();
    assert_eq!(map.shape(), &[2, 2]);
    for x in map.to_vec() {
        assert!((x - 1.0).abs() < 1e-5, "{x}");
    }
}

#[test]
fn rollout_of_one_block_is_its_mean_attention_with_the_residual() {
    let c = VitConfig {
        img_size: 8,
        patch_size: 4,
        embed_dim: 16,
        depth: 1,
        num_heads: 2,
        mlp_ratio: 2.0,
        num_classes: 3,
        ..VitConfig::preset("Ti/16").unwrap()
    };
    let model = VisionTransformer::new(c, &mut Rng::seed(9)).unwrap();
    for (_, p) in model.named_parameters() {
        let v = p.value();
        p.set(Tensor::randn(
            v.shape(),
            0.0,
            0.5,
            &mut Rng::seed(v.numel() as u64),
        ))
        .unwrap();
    }
    let image = Tensor::rand(&[3, 8, 8], 0.0, 1.0, &mut Rng::seed(1));
    let (_, probs) = model
        .forward_with_attention(&image.unsqueeze(0).unwrap())
        .unwrap();
    let a = probs[0].to_vec(); // [1, 2, 5, 5]
                               // Class-token row of 0.5·mean_h(A) + 0.5·I (rows of A sum to one, so no
                               // renormalisation is needed): the patch entries are 0.5·mean_h A[0, 1..].
    let row: Vec<f32> = (1..5).map(|j| 0.25 * (a[j] + a[25 + j])).collect();
    let max = row.iter().copied().fold(0.0, f32::max);
    let map = viz::attention_rollout(&model, &image).unwrap().to_vec();
    for (got, want) in map.iter().zip(&row) {
        assert!((got - want / max).abs() < 1e-5, "{got} vs {}", want / max);
    }
}

#[test]
fn filter_components_are_orthonormal_and_ordered() {
    let model = small(16, 4);
    let (comp, explained) = viz::filter_components(&model, 6).unwrap();
    assert_eq!(comp.shape(), &[6, 3, 4, 4]);
    assert!(explained.windows(2).all(|w| w[0] >= w[1]));
    assert!(explained.iter().sum::<f32>() <= 1.0 + 1e-5);
    let v = comp.to_vec();
    for i in 0..6 {
        for j in 0..6 {
            let dot: f32 = (0..48).map(|k| v[i * 48 + k] * v[j * 48 + k]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-4, "{i}·{j} = {dot}");
        }
    }
    let img = viz::filter_components_image(&model, 6, 3, 2).unwrap();
    assert_eq!(img.shape(), &[3, 2 * 9 - 1, 3 * 9 - 1]);
}

/// The logit of `class` for one image.
fn logit(model: &VisionTransformer, image: &Tensor, class: usize) -> f32 {
    let x = image.unsqueeze(0).unwrap();
    model.forward(&x, false).unwrap().value().to_vec()[class]
}

#[test]
fn gradient_saliency_is_the_largest_channel_gradient_by_finite_differences() {
    let model = small(8, 4); // three channels
    let image = Tensor::randn(&[3, 8, 8], 0.0, 1.0, &mut Rng::seed(5));
    let (map, class) = viz::gradient_saliency(&model, &image, None).unwrap();
    // The class explained is the prediction.
    let logits: Vec<f32> = (0..3).map(|k| logit(&model, &image, k)).collect();
    let best = (0..3)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(class, best);
    // max over channels of |∂logit/∂x| by central differences, scaled to a maximum of 1.
    let eps = 1e-2;
    let base = image.to_vec();
    let mut fd = vec![0.0f32; 64];
    for (p, slot) in fd.iter_mut().enumerate() {
        for ch in 0..3 {
            let at = |d: f32| {
                let mut v = base.clone();
                v[ch * 64 + p] += d;
                logit(&model, &Tensor::from_vec(v, &[3, 8, 8]).unwrap(), class)
            };
            *slot = slot.max(((at(eps) - at(-eps)) / (2.0 * eps)).abs());
        }
    }
    let max = fd.iter().cloned().fold(0.0, f32::max);
    let fd: Vec<f32> = fd.iter().map(|v| v / max).collect();
    tessera_testutil::assert_close_slice("saliency", &map, &fd, 2e-2, 0.0);
    // Another class gives another map.
    let other = (class + 1) % 3;
    let (map2, c2) = viz::gradient_saliency(&model, &image, Some(other)).unwrap();
    assert_eq!(c2, other);
    assert!(tessera_testutil::max_diff(&map, &map2) > 1e-2);
}

#[test]
fn integrated_gradients_are_complete_and_vanish_at_the_baseline() {
    let model = small(8, 4);
    let image = Tensor::randn(&[3, 8, 8], 0.0, 1.0, &mut Rng::seed(6));
    let ig = viz::integrated_gradients(&model, &image, None, Some(1), 256).unwrap();
    assert_eq!(ig.class, 1);
    // F(x) and F(x') are the model's logits for the image and the black image.
    assert!((ig.logit - logit(&model, &image, 1)).abs() < 1e-4);
    let black = Tensor::full(&[3, 8, 8], -1.0);
    assert!((ig.baseline_logit - logit(&model, &black, 1)).abs() < 1e-4);
    // Completeness (Sundararajan et al., 2017): the attributions add up to
    // F(x) - F(x'), up to the Riemann sum's error; a few steps are further off.
    assert!(
        ig.completeness_gap() < 0.01,
        "gap {}",
        ig.completeness_gap()
    );
    let coarse = viz::integrated_gradients(&model, &image, None, Some(1), 2).unwrap();
    assert!(coarse.completeness_gap() > ig.completeness_gap());
    // One step is (x - x') times the gradient at x.
    let one = viz::integrated_gradients(&model, &image, None, Some(1), 1).unwrap();
    let (grad_map, _) = viz::gradient_saliency(&model, &image, Some(1)).unwrap();
    assert_eq!(one.attributions.shape(), &[3, 8, 8]);
    let delta = image.sub(&black).unwrap();
    let ratio = one
        .attributions
        .div(&delta)
        .unwrap()
        .abs()
        .max(&[0], false)
        .unwrap();
    let max = ratio.to_vec().iter().cloned().fold(0.0, f32::max);
    tessera_testutil::assert_close(
        "one step",
        &ratio.mul_scalar(1.0 / max),
        &grad_map,
        1e-4,
        1e-3,
    );
    // The image as its own baseline has nothing to attribute.
    let none = viz::integrated_gradients(&model, &image, Some(&image), Some(1), 8).unwrap();
    assert!(none.attributions.to_vec().iter().all(|&a| a == 0.0));
    assert_eq!(none.map().unwrap().shape(), &[8, 8]);
    // The picture: the image beside the map.
    let picture = viz::attribution_image(&image, &ig.map().unwrap()).unwrap();
    assert_eq!(picture.shape(), &[3, 224, 448]);
}

#[test]
fn attributions_refuse_bad_images_classes_and_steps() {
    let model = small(8, 4);
    let image = Tensor::zeros(&[3, 8, 8]);
    let err = viz::gradient_saliency(&model, &Tensor::zeros(&[3, 9, 8]), None).unwrap_err();
    assert!(err.to_string().contains("[3, 8, 8]"), "{err}");
    let err = viz::gradient_saliency(&model, &image, Some(3)).unwrap_err();
    assert!(err.to_string().contains("class = 3"), "{err}");
    let err = viz::integrated_gradients(&model, &image, None, None, 0).unwrap_err();
    assert!(err.to_string().contains("steps = 0"), "{err}");
    let wrong = Tensor::zeros(&[1, 8, 8]);
    let err = viz::integrated_gradients(&model, &image, Some(&wrong), None, 4).unwrap_err();
    assert!(err.to_string().contains("baseline"), "{err}");
}
