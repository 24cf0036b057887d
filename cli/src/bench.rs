//! `tessera bench`: the reference workloads of `WORKLOADS.md` (see `tessera-bench`),
//! printed as a table or as `torch_bench.py`'s JSON lines.

use anyhow::Result;
use clap::Args;
use tessera_bench::{Record, Settings, Workload};

/// Arguments of `tessera bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Workloads to run: W0, W1, W1b, W2, W3, W4, W5, W6 or all.
    #[arg(default_value = "all", value_parser = workloads)]
    workloads: Vec<Workloads>,
    #[command(flatten)]
    threads: crate::train::Threads,
    /// Print one JSON line per figure, in the form of torch_bench.py.
    #[arg(long)]
    json: bool,
    /// Minimum number of timed steps.
    #[arg(long, default_value_t = 10, value_parser = crate::ranges::at_least_one::<usize>())]
    steps: usize,
    /// Keep timing until this many seconds were timed.
    #[arg(long, default_value_t = 2.0, value_parser = crate::ranges::non_negative::<f64>(), allow_negative_numbers = true)]
    min_time: f64,
    /// Upper bound on timed steps.
    #[arg(long, default_value_t = 2000, value_parser = crate::ranges::at_least_one::<usize>())]
    max_steps: usize,
    /// Only the W1 sizes given (for example --sizes 256,1024).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
}

/// The workloads one argument names: one id, or all of them.
#[derive(Clone, Debug)]
struct Workloads(Vec<Workload>);

fn workloads(s: &str) -> Result<Workloads, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(Workloads(Workload::ALL.to_vec()));
    }
    s.parse()
        .map(|w| Workloads(vec![w]))
        .map_err(|e| format!("{e}"))
}

/// Runs `tessera bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    args.threads.apply();
    for &n in args.sizes.iter().flatten() {
        let bytes = 3.0 * (n as f64) * (n as f64) * 4.0;
        let what = format!("W1 at n = {n}");
        crate::train::fits_in_memory(&what, bytes, "three n x n f32 matrices")?;
    }
    let mut list: Vec<Workload> = args.workloads.iter().flat_map(|w| w.0.clone()).collect();
    list.dedup();
    let settings = Settings {
        steps: args.steps,
        min_time: args.min_time,
        max_steps: args.max_steps,
        sizes: args.sizes.clone(),
    };
    let json = args.json;
    if !json {
        println!(
            "{:<5} {:<28} {:>7} {:>10} {:>10} {:>10} {:>6}  figure",
            "id", "variant", "threads", "median", "min", "max", "steps"
        );
    }
    let mut print = |r: Record| {
        if json {
            println!("{}", serde_json::to_string(&r).expect("records serialise"));
        } else {
            println!(
                "{:<5} {:<28} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>6}  {}",
                r.workload, r.variant, r.threads, r.median, r.min, r.max, r.steps, r.figure
            );
        }
    };
    for w in list {
        tessera_bench::run(w, &settings, &mut print)?;
    }
    Ok(())
}
