//! Images: resizing against PyTorch's `F.interpolate` and timm, decoding against PIL,
//! torchvision's resize + centre crop, patches against a hand-written convolution, and
//! the errors of bad input.
//!
//! The reference numbers are in `tests/fixtures/images.safetensors`, written by
//! `tests/fixtures/make_fixtures.py` (torch 2.x, torchvision, timm, PIL; the settings of
//! each tensor are in the script's docstring).

use tessera_data::{
    center_crop, decode_image, hflip, load_image, normalize, patches, random_crop, resize,
    resize_shorter, save_png, unpatch, ColorMode, Error, Filter,
};
use tessera_tensor::{Rng, SafeTensorsFile, Tensor};

fn fixtures() -> SafeTensorsFile {
    tessera_testutil::safetensors_fixture!("images.safetensors")
}

fn photos() -> std::path::PathBuf {
    tessera_testutil::shared_data("photos")
}

#[test]
fn resize_equals_torch_interpolate() {
    let f = fixtures();
    let mut checked = 0;
    for case in ["a", "b", "c", "d", "e"] {
        let x = f.get(&format!("interp.{case}.input")).unwrap();
        for (name, filter, aa) in [
            ("nearest", Filter::Nearest, false),
            ("bilinear", Filter::Bilinear, false),
            ("bilinear_aa", Filter::Bilinear, true),
            ("bicubic", Filter::Bicubic, false),
            ("bicubic_aa", Filter::Bicubic, true),
        ] {
            let want = f.get(&format!("interp.{case}.{name}")).unwrap();
            let (oh, ow) = (want.shape()[2], want.shape()[3]);
            let got = resize(&x, oh, ow, filter, aa).unwrap();
            let d = tessera_testutil::max_diff(&got, &want);
            assert!(d < 1e-5, "case {case} {name}: max |diff| {d}");
            checked += 1;
        }
    }
    assert_eq!(checked, 25);
}

#[test]
fn resize_accepts_any_leading_axes() {
    // The same planes as [C, H, W], [H, W] per plane and [1, 1, C, H, W] give the same
    // numbers as the [B, C, H, W] fixture.
    let f = fixtures();
    let x = f.get("interp.c.input").unwrap();
    let want = f.get("interp.c.bicubic_aa").unwrap();
    let x3 = x.reshape(&[8, 16, 16]).unwrap();
    let got3 = resize(&x3, 7, 7, Filter::Bicubic, true).unwrap();
    assert!(tessera_testutil::max_diff(&got3, &want.reshape(&[8, 7, 7]).unwrap()) < 1e-5);
    let x5 = x.reshape(&[1, 1, 8, 16, 16]).unwrap();
    let got5 = resize(&x5, 7, 7, Filter::Bicubic, true).unwrap();
    assert!(tessera_testutil::max_diff(&got5, &want.reshape(&[1, 1, 8, 7, 7]).unwrap()) < 1e-5);
    let plane = x3.narrow(0, 2, 1).unwrap().reshape(&[16, 16]).unwrap();
    let got2 = resize(&plane, 7, 7, Filter::Bicubic, true).unwrap();
    let want2 = want.narrow(1, 2, 1).unwrap().reshape(&[7, 7]).unwrap();
    assert!(tessera_testutil::max_diff(&got2, &want2) < 1e-5);
    // A non-contiguous view (a transposed input) resizes like its copy.
    let t = x3.transpose(1, 2).unwrap();
    let a = resize(&t, 9, 5, Filter::Bilinear, false).unwrap();
    let b = resize(&t.contiguous(), 9, 5, Filter::Bilinear, false).unwrap();
    assert_eq!(a, b);
    // Errors: rank 1, empty output, antialiased nearest.
    assert!(resize(&Tensor::zeros(&[4]), 2, 2, Filter::Bilinear, false).is_err());
    assert!(resize(&x3, 0, 2, Filter::Bilinear, false).is_err());
    assert!(resize(&x3, 4, 4, Filter::Nearest, true).is_err());
}

#[test]
fn position_embedding_resampling_equals_timm() {
    // timm's resample_abs_pos_embed: [1, 14·14, D] -> [1, D, 14, 14] -> bicubic,
    // antialias=True to 10×10 -> [1, 100, D].
    let f = fixtures();
    let pe = f.get("posemb.input").unwrap();
    let want = f.get("posemb.out").unwrap();
    let grid = pe
        .reshape(&[1, 14, 14, 8])
        .unwrap()
        .permute(&[0, 3, 1, 2])
        .unwrap(); // (1, D, 14, 14)
    let small = resize(&grid, 10, 10, Filter::Bicubic, true).unwrap(); // (1, D, 10, 10)
    let got = small
        .permute(&[0, 2, 3, 1])
        .unwrap()
        .reshape(&[1, 100, 8])
        .unwrap(); // (1, 100, D)
    let d = tessera_testutil::max_diff(&got, &want);
    assert!(d < 1e-5, "max |diff| {d}");
}

#[test]
fn hand_computed_resizes() {
    // 1×4 -> 1×2 bilinear without antialias: sources 0.5 and 2.5 -> means of neighbours.
    let x = Tensor::from_vec(vec![0.0, 2.0, 4.0, 8.0], &[1, 4]).unwrap();
    let y = resize(&x, 1, 2, Filter::Bilinear, false).unwrap();
    assert_eq!(y.to_vec(), vec![1.0, 6.0]);
    // With antialias the triangle is stretched by 2: centre 1, support 2, taps at
    // offsets -0.5, 0.5, 1.5 get weights 0.75, 0.75, 0.25 (over 1.75):
    // (0·0.75 + 2·0.75 + 4·0.25) / 1.75 = 2.5 / 1.75.
    let y = resize(&x, 1, 2, Filter::Bilinear, true).unwrap();
    assert!((y.to_vec()[0] - 2.5 / 1.75).abs() < 1e-6);
    // Nearest 4 -> 3: floor(i · 4/3) = 0, 1, 2.
    let y = resize(&x, 1, 3, Filter::Nearest, false).unwrap();
    assert_eq!(y.to_vec(), vec![0.0, 2.0, 4.0]);
    // Bicubic of a constant is the constant (weights sum to 1), with or without aa.
    let c = Tensor::full(&[2, 5, 7], 0.25);
    for aa in [false, true] {
        let y = resize(&c, 3, 11, Filter::Bicubic, aa).unwrap();
        assert!(y.to_vec().iter().all(|v| (v - 0.25).abs() < 1e-6));
    }
    // Same size is the identity.
    let y = resize(&c, 5, 7, Filter::Bicubic, true).unwrap();
    assert_eq!(y, c);
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn resize_shorter_and_center_crop_equal_torchvision() {
    let dir = photos();
    let f = fixtures();
    let img = load_image(dir.join("chelsea.png"), ColorMode::Rgb).unwrap();
    assert_eq!(img.shape(), &[3, 300, 451]);
    let small = resize_shorter(&img, 32, Filter::Bilinear).unwrap();
    // torchvision: int(32 · 451 / 300) = 48.
    assert_eq!(small.shape(), &[3, 32, 48]);
    let crop = center_crop(&small, 20, 20).unwrap();
    let want = f.get("tv.chelsea").unwrap();
    let d = tessera_testutil::max_diff(&crop, &want);
    assert!(d < 1e-5, "max |diff| {d}");
}

#[test]
fn crops_flips_and_normalize() {
    let img = Tensor::arange(0.0, 2.0 * 4.0 * 6.0, 1.0)
        .unwrap()
        .reshape(&[2, 4, 6])
        .unwrap();
    // torchvision: top = int(round((4 - 3) / 2)) = round(0.5) = 0,
    // left = int(round((6 - 3) / 2)) = round(1.5) = 2.
    let c = center_crop(&img, 3, 3).unwrap();
    assert_eq!(c.get(&[0, 0, 0]).unwrap(), 2.0);
    assert_eq!(c.get(&[1, 2, 2]).unwrap(), 24.0 + 2.0 * 6.0 + 4.0);
    assert!(center_crop(&img, 5, 2).is_err());
    let h = hflip(&img).unwrap();
    assert_eq!(h.get(&[1, 3, 0]).unwrap(), img.get(&[1, 3, 5]).unwrap());
    assert_eq!(hflip(&h).unwrap(), img);
    // A random crop with padding: every value is 0 (padding) or the image's value at
    // the shifted position; both channels are cut at the same place.
    let mut rng = Rng::seed(3);
    let mut saw_padding = false;
    for _ in 0..20 {
        let r = random_crop(&img, 4, 6, 2, &mut rng).unwrap();
        assert_eq!(r.shape(), &[2, 4, 6]);
        let v = r.to_vec();
        // Find the shift from a non-padding value of channel 0.
        let (k, &val) = v[..24].iter().enumerate().find(|(_, &x)| x != 0.0).unwrap();
        let (sy, sx) = (val as usize / 6, val as usize % 6);
        let (dy, dx) = (
            sy as isize - (k / 6) as isize,
            sx as isize - (k % 6) as isize,
        );
        for y in 0..4isize {
            for x in 0..6isize {
                let (iy, ix) = (y + dy, x + dx);
                let inside = (0..4).contains(&iy) && (0..6).contains(&ix);
                for ch in 0..2 {
                    let got = v[ch * 24 + (y * 6 + x) as usize];
                    let want = if inside {
                        (ch * 24) as f32 + (iy * 6 + ix) as f32
                    } else {
                        0.0
                    };
                    assert_eq!(got, want);
                }
                saw_padding |= !inside;
            }
        }
    }
    assert!(saw_padding);
    assert!(random_crop(&img, 9, 6, 2, &mut rng).is_err());
    // Normalize: (x - mean) / std per channel, channel count checked.
    let n = normalize(&img, &[1.0, 24.0], &[2.0, 4.0]).unwrap();
    assert_eq!(n.get(&[0, 0, 3]).unwrap(), (3.0 - 1.0) / 2.0);
    assert_eq!(n.get(&[1, 0, 0]).unwrap(), 0.0);
    let msg = normalize(&img, &[0.5; 3], &[0.5; 3])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("3 means") && msg.contains("2 channels"),
        "{msg}"
    );
    assert!(normalize(&img, &[0.0, 0.0], &[1.0, 0.0]).is_err());
    let batch = img.reshape(&[1, 2, 4, 6]).unwrap();
    let nb = normalize(&batch, &[1.0, 24.0], &[2.0, 4.0]).unwrap();
    assert_eq!(nb.reshape(&[2, 4, 6]).unwrap(), n);
}

#[test]
fn patches_times_weights_equal_the_strided_convolution() {
    // timm's PatchEmbed: conv2d(x, W [D, C, P, P], b, stride=P), flattened to tokens.
    let (b, c, h, w, p, d) = (2, 3, 8, 12, 4, 5);
    let mut rng = Rng::seed(11);
    let x = Tensor::randn(&[b, c, h, w], 0.0, 1.0, &mut rng);
    let wt = Tensor::randn(&[d, c, p, p], 0.0, 1.0, &mut rng);
    let bias = Tensor::randn(&[d], 0.0, 1.0, &mut rng);
    let tokens = patches(&x, p).unwrap(); // (B, N, C·P·P)
    let (gh, gw) = (h / p, w / p);
    assert_eq!(tokens.shape(), &[b, gh * gw, c * p * p]);
    let y = tokens
        .matmul(&wt.reshape(&[d, c * p * p]).unwrap().t().unwrap())
        .unwrap()
        .add(&bias)
        .unwrap(); // (B, N, D)
    let (xv, wv, bv, yv) = (x.to_vec(), wt.to_vec(), bias.to_vec(), y.to_vec());
    for bi in 0..b {
        for gy in 0..gh {
            for gx in 0..gw {
                for o in 0..d {
                    // The convolution at output position (gy, gx), written out.
                    let mut s = bv[o] as f64;
                    for ci in 0..c {
                        for i in 0..p {
                            for j in 0..p {
                                let xi = ((bi * c + ci) * h + gy * p + i) * w + gx * p + j;
                                let wi = ((o * c + ci) * p + i) * p + j;
                                s += xv[xi] as f64 * wv[wi] as f64;
                            }
                        }
                    }
                    let n = gy * gw + gx;
                    let got = yv[(bi * gh * gw + n) * d + o];
                    assert!((got as f64 - s).abs() < 1e-4, "b {bi} patch {n} out {o}");
                }
            }
        }
    }
    // The inverse, and a [C, H, W] image without the batch axis.
    assert_eq!(unpatch(&tokens, c, h, w, p).unwrap(), x);
    let one = x.narrow(0, 1, 1).unwrap().reshape(&[c, h, w]).unwrap();
    let t1 = patches(&one, p).unwrap();
    assert_eq!(t1.shape(), &[gh * gw, c * p * p]);
    assert_eq!(unpatch(&t1, c, h, w, p).unwrap(), one);
    // P not dividing H or W: the message names P, H and W.
    let msg = patches(&x, 5).unwrap_err().to_string();
    assert!(
        msg.contains("5") && msg.contains("8") && msg.contains("12"),
        "{msg}"
    );
    assert!(unpatch(&tokens, c, h, w, 3).is_err());
    assert!(unpatch(&tokens, c + 1, h, w, p).is_err());
}

#[test]
#[ignore = "needs ../shared/data (run with --include-ignored)"]
fn photos_decode_as_pil_reads_them() {
    let dir = photos();
    let f = fixtures();
    let meta = f.metadata().unwrap();
    for (photo, modes, tol) in [
        ("chelsea.png", &["RGB", "L"][..], 1e-6),
        ("camera.png", &["L", "RGB"][..], 1e-6),
        ("logo.png", &["RGBA", "RGB", "L"][..], 1e-6),
        // JPEG decoders may differ by a few levels (IDCT and chroma upsampling).
        ("rocket.jpg", &["RGB", "L"][..], 6.0 / 255.0),
    ] {
        let corner = &meta[&format!("pil.{photo}.window")];
        let (top, left) = corner.split_once(',').unwrap();
        let (top, left): (usize, usize) = (top.parse().unwrap(), left.parse().unwrap());
        for mode in modes {
            let cm = match *mode {
                "RGB" => ColorMode::Rgb,
                "L" => ColorMode::Gray,
                _ => ColorMode::Keep,
            };
            let img = load_image(dir.join(photo), cm).unwrap();
            let win = img
                .narrow(1, top, 4)
                .unwrap()
                .narrow(2, left, 5)
                .unwrap()
                .contiguous();
            let want = f.get(&format!("pil.{photo}.{mode}")).unwrap();
            let d = tessera_testutil::max_diff(&win, &want);
            assert!(d <= tol, "{photo} {mode}: max |diff| {d}");
        }
    }
    // Sizes from the data README: (w × h) 451×300, 512×512, 500×500, 640×427.
    let shape = |name: &str, m| load_image(dir.join(name), m).unwrap().shape().to_vec();
    assert_eq!(shape("chelsea.png", ColorMode::Keep), vec![3, 300, 451]);
    assert_eq!(shape("camera.png", ColorMode::Keep), vec![1, 512, 512]);
    assert_eq!(shape("logo.png", ColorMode::Keep), vec![4, 500, 500]);
    assert_eq!(shape("rocket.jpg", ColorMode::Rgb), vec![3, 427, 640]);
}

#[test]
fn alpha_is_dropped_as_pil_drops_it() {
    let f = fixtures();
    let path = tessera_testutil::fixture_path!("alpha.png");
    for (mode, cm) in [
        ("RGBA", ColorMode::Keep),
        ("RGB", ColorMode::Rgb),
        ("L", ColorMode::Gray),
    ] {
        let got = load_image(&path, cm).unwrap();
        let want = f.get(&format!("pil.alpha.{mode}")).unwrap();
        assert_eq!(tessera_testutil::max_diff(&got, &want), 0.0, "{mode}");
    }
    // The same bytes from memory.
    let bytes = std::fs::read(&path).unwrap();
    let got = decode_image(&bytes, ColorMode::Rgb).unwrap();
    assert_eq!(got, f.get("pil.alpha.RGB").unwrap());
}

#[test]
fn png_round_trip_and_atomic_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    let mut rng = Rng::seed(5);
    for c in [1, 3, 4] {
        let img = Tensor::rand(&[c, 5, 7], -0.2, 1.2, &mut rng);
        save_png(&path, &img).unwrap();
        let back = load_image(&path, ColorMode::Keep).unwrap();
        assert_eq!(back.shape(), &[c, 5, 7]);
        // Each value is round(255 · clamp(v, 0, 1)) / 255.
        for (a, b) in img.to_vec().iter().zip(back.to_vec()) {
            assert_eq!(b, (a.clamp(0.0, 1.0) * 255.0).round() / 255.0);
        }
    }
    // Only the PNG is left in the folder (no temporary file).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("x.png")]);
    assert!(save_png(&path, &Tensor::zeros(&[2, 3, 3])).is_err());
    assert!(save_png(&path, &Tensor::zeros(&[3, 3])).is_err());
    assert!(save_png(
        dir.path().join("no/such/dir/x.png"),
        &Tensor::zeros(&[1, 2, 2])
    )
    .is_err());
}

#[test]
fn bad_image_files_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.png");
    std::fs::write(&fake, "this is text, not a picture\n").unwrap();
    let err = load_image(&fake, ColorMode::Rgb).unwrap_err();
    assert!(matches!(err, Error::Image { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.png"), "{err}");
    // A PNG cut in half.
    let good = dir.path().join("good.png");
    save_png(&good, &Tensor::full(&[3, 32, 32], 0.5)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_image(&cut, ColorMode::Rgb).unwrap_err();
    assert!(err.to_string().contains("cut.png"), "{err}");
    // A missing file.
    let err = load_image(dir.path().join("missing.jpg"), ColorMode::Rgb).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.jpg"));
    assert!(decode_image(&bytes[..20], ColorMode::Rgb).is_err());
}
