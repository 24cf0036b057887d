//! The harness itself: cases replay, and a panic, a slow input and a huge allocation
//! are each counted as a failure with the case that replays it.

use std::path::Path;
use std::time::Duration;

use tessera_fuzz::runner::{case_input, run_cases, scratch_dir, thread_cpu_time, Options, MIB};
use tessera_fuzz::{Driver, FailureKind, Input, Kind, Seed};

#[global_allocator]
static GLOBAL: tessera_fuzz::CountingAlloc = tessera_fuzz::CountingAlloc;

/// A driver that misbehaves on inputs starting with a given byte.
struct Trap {
    seeds: Vec<Seed>,
}

impl Driver for Trap {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn run(&self, input: &Input, _: &Path) -> Result<(), String> {
        match input.parts[0].first() {
            Some(b'P') => panic!("trapped"),
            // 30 ms of work.
            Some(b'S') => {
                let start = thread_cpu_time();
                while thread_cpu_time() - start < Duration::from_millis(30) {
                    std::hint::black_box(0u64.wrapping_add(1));
                }
            }
            // 30 ms of waiting, as on a machine busy with other work: no CPU time.
            Some(b'W') => std::thread::sleep(Duration::from_millis(30)),
            Some(b'A') => {
                let big = vec![1u8; 80 * MIB];
                assert_eq!(big[80 * MIB - 1], 1);
            }
            _ => {}
        }
        Ok(())
    }
}

fn trap(first: u8) -> Trap {
    Trap {
        seeds: vec![Seed::one("trap", vec![first; 4], Kind::Binary)],
    }
}

/// 40 cases, the time limit `limit_ms`.
fn opts(limit_ms: u64) -> Options {
    Options {
        inputs: 40,
        time_limit: Duration::from_millis(limit_ms),
        verbose: false,
        ..Options::default()
    }
}

#[test]
fn a_case_is_the_same_input_every_time() {
    let driver = tessera_fuzz::parser("idx").unwrap();
    let driver = (driver.make)().unwrap();
    for case in [0, 1, 77, 123_456] {
        let a = case_input(driver.as_ref(), "idx", 3, case);
        let b = case_input(driver.as_ref(), "idx", 3, case);
        assert_eq!(a, b, "case {case}");
    }
    let (a, b) = (
        case_input(driver.as_ref(), "idx", 3, 5),
        case_input(driver.as_ref(), "idx", 4, 5),
    );
    assert_ne!(a, b, "another seed, another input");
}

#[test]
fn panics_slow_inputs_and_huge_allocations_are_failures() {
    let dir = scratch_dir().unwrap();
    for (first, kind) in [
        (b'P', FailureKind::Panic),
        (b'S', FailureKind::Hang),
        (b'A', FailureKind::Allocation),
    ] {
        let limit = if kind == FailureKind::Hang { 20 } else { 1000 };
        let report = run_cases("trap", &trap(first), dir.path(), &opts(limit));
        assert_eq!(report.inputs, 40);
        // Cases mutated from the seed mostly keep its first byte; random bytes do not.
        let failing: Vec<_> = report.failures.iter().filter(|f| f.kind == kind).collect();
        assert!(failing.len() > 10, "{kind:?}: {} failures", failing.len());
        assert!(
            report.failures.iter().all(|f| f.kind == kind),
            "{:?}",
            report.failures
        );
        let f = failing[0];
        assert!(f
            .replay()
            .ends_with(&format!("--parser trap --seed 0 --case {}", f.case)));
        match kind {
            FailureKind::Panic => assert!(f.detail.starts_with("trapped at "), "{}", f.detail),
            FailureKind::Hang => assert!(report.slowest >= Duration::from_millis(30)),
            FailureKind::Allocation => {
                assert!(tessera_fuzz::alloc::installed());
                assert!(report.largest.0 >= 80 * MIB && report.largest.1 < 80 * MIB);
            }
        }
    }
    let fine = run_cases("trap", &trap(b'x'), dir.path(), &opts(1000));
    assert!(fine.passed(), "{:?}", fine.failures);
}

#[test]
fn an_input_that_waits_is_not_a_hang_its_cpu_time_counts() {
    let dir = scratch_dir().unwrap();
    let report = run_cases("trap", &trap(b'W'), dir.path(), &opts(20));
    assert!(report.passed(), "{:?}", report.failures);
    assert_eq!(report.hangs, 0);
    assert!(
        report.slowest < Duration::from_millis(20),
        "{:?}",
        report.slowest
    );
}
