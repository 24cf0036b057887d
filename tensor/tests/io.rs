//! safetensors reading and writing.

use std::collections::HashMap;

use tessera_tensor::{
    load_safetensors, save_safetensors, save_safetensors_as, Precision, SafeTensorsFile, Tensor,
};

const DTYPES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dtypes.safetensors"
);

#[test]
fn reads_every_float_dtype_written_by_torch() {
    // Written by tests/fixtures/make_fixtures.py from one f32 tensor cast to each dtype.
    let file = SafeTensorsFile::open(DTYPES).unwrap();
    assert_eq!(
        file.names(),
        vec!["bf16", "bool", "f16", "f32", "f64", "i64"]
    );
    let f32s = file.get("f32").unwrap();
    assert_eq!(f32s.to_vec(), vec![0.5, -1.25, 3.0, 1e-3, 65504.0, -2.0]);
    assert_eq!(file.get("f64").unwrap(), f32s);
    // f16 and bf16 hold the values rounded to their precision.
    let f16 = file.get("f16").unwrap().to_vec();
    assert_eq!(f16[..3], [0.5, -1.25, 3.0]);
    assert!((f16[3] - 1e-3).abs() < 1e-6);
    assert_eq!(f16[4], 65504.0);
    let bf16 = file.get("bf16").unwrap().to_vec();
    assert_eq!(bf16[..3], [0.5, -1.25, 3.0]);
    assert_eq!(bf16[4], 65536.0); // 65504 rounds to 2^16 with bf16's 8-bit mantissa
    assert_eq!(
        file.get("i64").unwrap().to_vec(),
        vec![1., -2., 3., 4., 5., 6.]
    );
    assert_eq!(file.get("bool").unwrap().to_vec(), vec![1., 0., 1.]);
    assert_eq!(file.metadata().unwrap()["made_by"], "make_fixtures.py");
    let entries = file.entries();
    assert_eq!(
        entries[0],
        ("bf16".to_string(), vec![2, 3], "BF16".to_string())
    );
}

#[test]
fn writes_f16_and_bf16_rounded_as_torch_rounds_them() {
    // The fixture holds torch's own casts of its f32 tensor.
    let torch = SafeTensorsFile::open(DTYPES).unwrap();
    let x = torch.get("f32").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("f32.safetensors");
    save_safetensors(&full, [("x", &x)], None).unwrap();
    for (precision, dtype, cast) in [
        (Precision::F16, "F16", "f16"),
        (Precision::BF16, "BF16", "bf16"),
    ] {
        let path = dir.path().join(format!("{cast}.safetensors"));
        save_safetensors_as(&path, [("x", &x)], None, precision).unwrap();
        let file = SafeTensorsFile::open(&path).unwrap();
        assert_eq!(file.entries()[0].2, dtype);
        assert_eq!(
            file.get("x").unwrap().to_vec(),
            torch.get(cast).unwrap().to_vec(),
            "{dtype}"
        );
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        // 2 bytes a value instead of 4: 12 bytes fewer, give or take the header's padding
        // to 8 bytes.
        let saved = size(&full) as i64 - size(&path) as i64;
        assert!((4..=20).contains(&saved), "{dtype}: {saved} bytes fewer");
    }
}

#[test]
fn round_trips_with_metadata_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let a = Tensor::arange(0.0, 12.0, 1.0)
        .unwrap()
        .reshape(&[3, 4])
        .unwrap();
    let at = a.t().unwrap(); // a non-contiguous view is written in logical order
    let meta = HashMap::from([("config".to_string(), "{\"d\": 4}".to_string())]);
    save_safetensors(&path, [("a", &a), ("a.t", &at)], Some(&meta)).unwrap();
    let back = load_safetensors(&path).unwrap();
    assert_eq!(back["a"], a);
    assert_eq!(back["a.t"], at);
    assert_eq!(
        SafeTensorsFile::open(&path).unwrap().metadata().unwrap(),
        meta
    );
    assert!(save_safetensors(&path, [("x", &a), ("x", &a)], None).is_err());
}

#[test]
fn the_same_tensors_and_metadata_always_give_the_same_bytes() {
    let a = Tensor::arange(0.0, 6.0, 1.0).unwrap();
    let b = Tensor::full(&[2, 2], -1.5);
    let files: Vec<Vec<u8>> = (0..8)
        .map(|_| {
            // Each map has its own random hash order.
            let meta: HashMap<String, String> = (0..16)
                .map(|i| (format!("key{i}"), format!("value {i}")))
                .collect();
            tessera_tensor::safetensors_bytes([("b", &b), ("a", &a)], Some(&meta)).unwrap()
        })
        .collect();
    assert!(files.windows(2).all(|w| w[0] == w[1]));
    let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&files[0][8..8 + n]).unwrap();
    let mut names: Vec<String> = (0..16).map(|i| format!("\"key{i}\"")).collect();
    names.sort();
    let places: Vec<usize> = names
        .iter()
        .map(|k| header.find(k.as_str()).unwrap())
        .collect();
    assert!(
        places.windows(2).all(|w| w[0] < w[1]),
        "metadata keys are written in sorted order: {header}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sorted.safetensors");
    std::fs::write(&path, &files[0]).unwrap();
    let back = load_safetensors(&path).unwrap();
    assert_eq!((&back["a"], &back["b"]), (&a, &b));
    assert_eq!(
        SafeTensorsFile::open(&path)
            .unwrap()
            .metadata()
            .unwrap()
            .len(),
        16
    );
}

#[test]
fn corrupt_and_missing_files_are_clear_errors_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let w = Tensor::ones(&[64, 64]);
    save_safetensors(&path, [("w", &w)], None).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let msg = SafeTensorsFile::open(&cut).err().unwrap().to_string();
    assert!(
        msg.starts_with(&format!("safetensors {}:", cut.display())),
        "{msg}"
    );

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    assert!(SafeTensorsFile::open(&junk).is_err());

    let missing = dir.path().join("absent.safetensors");
    let msg = SafeTensorsFile::open(&missing).err().unwrap().to_string();
    assert!(msg.contains("absent.safetensors"), "{msg}");

    let file = SafeTensorsFile::open(&path).unwrap();
    let msg = file.get("v").unwrap_err().to_string();
    assert!(msg.contains("no tensor named \"v\""), "{msg}");

    // A failed save (the target is a directory) leaves no temporary file behind.
    let target = dir.path().join("sub");
    std::fs::create_dir(&target).unwrap();
    assert!(save_safetensors(&target, [("w", &w)], None).is_err());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}
