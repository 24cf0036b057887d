//! `tessera bench` end to end: the JSON lines carry torch_bench.py's keys and sane
//! figures, the table prints, and bad flags fail with one clear line.

mod common;

use common::tessera;

#[test]
fn json_lines_have_torch_bench_keys() {
    let out = tessera(&[
        "bench",
        "W1",
        "--sizes",
        "64,96",
        "--threads",
        "1",
        "--json",
        "--min-time",
        "0",
        "--steps",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, n) in lines.iter().zip([64, 96]) {
        for key in [
            "workload", "variant", "threads", "figure", "median", "min", "max", "steps",
        ] {
            assert!(line.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(line["workload"], "W1");
        assert_eq!(line["variant"], format!("n={n}"));
        assert_eq!(line["threads"], 1);
        assert_eq!(line["figure"], "GFLOP/s");
        assert_eq!(line["steps"], 3);
        let (min, med, max) = (
            line["min"].as_f64().unwrap(),
            line["median"].as_f64().unwrap(),
            line["max"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= med && med <= max, "{line}");
        // One thread has nothing to share cores with.
        assert!(line.get("cores_delivered").is_none(), "{line}");
    }
}

#[test]
fn several_threads_report_the_cores_they_got() {
    let out = tessera(&[
        "bench",
        "W1",
        "--sizes",
        "64",
        "--threads",
        "2",
        "--json",
        "--min-time",
        "0",
        "--steps",
        "3",
    ]);
    assert!(out.status.success());
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(line["threads"], 2);
    if line["isa"] == "scalar" {
        assert!(line.get("cores_delivered").is_none(), "{line}");
    } else {
        // At most the two cores two threads can use; fewer where other work shares them.
        let cores = line["cores_delivered"].as_f64().expect("cores_delivered");
        assert!((0.25..2.5).contains(&cores), "{line}");
    }
}

#[test]
fn table_and_attention_shapes() {
    let out = tessera(&[
        "bench",
        "W1b",
        "--threads",
        "2",
        "--min-time",
        "0",
        "--steps",
        "2",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[256,64,64]x[256,64,64]"), "{text}");
    assert!(text.contains("[256,64,32]x[256,32,64]"), "{text}");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = tessera(&["bench", "W1", "--threads", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(
        "error: invalid value '0' for '--threads <THREADS>': expected a whole number of at least 1"
    ));
    let out = tessera(&["bench", "W9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("W9"));
}

#[test]
fn the_kernels_run_at_the_instruction_set_that_tessera_max_isa_caps() {
    let run = |cap: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["bench", "W1", "--sizes", "64", "--threads", "1", "--json"])
            .args(["--min-time", "0", "--steps", "2"])
            .env("TESSERA_MAX_ISA", cap)
            .output()
            .expect("the tessera binary runs")
    };
    let out = run("scalar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(line["isa"], "scalar", "{line}");
    // No FMA peak to measure the product against on the baseline path.
    assert!(line.get("peak_fraction").is_none(), "{line}");
    let out = run("avx1024");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TESSERA_MAX_ISA") && err.contains("avx1024") && err.contains("avx512"),
        "{err}"
    );
}
