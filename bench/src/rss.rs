//! The resident memory of this process, from `/proc/self/status` (Linux only; `None`
//! elsewhere).
//!
//! The peak (`VmHWM`) is the most memory the process held resident at once. Writing `5`
//! to `/proc/self/clear_refs` (Linux 4.0 and later) sets it back to the present resident
//! set, so that the peak of one workload can be read on its own; where that write fails
//! (an older kernel, a locked-down `/proc`), the peak is the process's since it started.

/// A value of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`), in MiB.
#[cfg(target_os = "linux")]
fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(not(target_os = "linux"))]
fn status_mib(_key: &str) -> Option<f64> {
    None
}

/// The resident set of this process now (`VmRSS`), in MiB.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS")
}

/// The peak resident set of this process (`VmHWM`), in MiB: since the last
/// [`reset_peak_rss`] that succeeded, or since the process started.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM")
}

/// Sets the peak resident set back to the present one (writes `5` to
/// `/proc/self/clear_refs`); `false` where that could not be done, and the peak keeps
/// counting from the start of the process.
pub fn reset_peak_rss() -> bool {
    cfg!(target_os = "linux") && std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_peak_follows_a_large_allocation_and_resets() {
        let before = rss_mib().unwrap();
        assert!(before > 0.0);
        // 64 MiB, touched so that it is resident.
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = peak_rss_mib().unwrap();
        assert!(
            peak >= before + 60.0,
            "peak {peak} MiB, before {before} MiB"
        );
        drop(big);
        if reset_peak_rss() {
            // Freed and reset: the peak is the present resident set, far below.
            let after = peak_rss_mib().unwrap();
            assert!(
                after < peak - 30.0,
                "peak {after} MiB after reset, {peak} before"
            );
        }
    }
}
