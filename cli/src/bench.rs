//! `tessera bench`: the reference workloads of `WORKLOADS.md` (see `tessera-bench`),
//! printed as a table or as `torch_bench.py`'s JSON lines.
//!
//! The table also gives each figure's peak resident set (MiB, since its workload
//! began) and, for W1 and W1b, the fraction of the cores' measured FMA peak.

use anyhow::Result;
use clap::Args;
use tessera_bench::{Record, Settings, Workload};

/// Arguments of `tessera bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Workloads to run: W0, W1, W1b, W2, W3, W4, W5, W6, W7, or all (W0 to W6). W7
    /// (data-parallel W4 on 1 and 2 ranks, one thread each unless --threads says
    /// otherwise) starts `mpirun` itself and needs the feature `mpi`.
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
    /// W7: the ranks of its data-parallel half (the other is 1 rank).
    #[arg(long, default_value_t = 2, value_parser = crate::ranges::at_least_one::<usize>())]
    ranks: usize,
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
    if tessera_distributed_launched() {
        return w7_rank(args);
    }
    if args.threads.threads.is_none() && args.workloads.iter().all(|w| w.0 == [Workload::W7]) {
        // W7: one thread per rank unless told otherwise.
        tessera_tensor::set_num_threads(1);
    }
    args.threads.apply();
    for &n in args.sizes.iter().flatten() {
        let bytes = 3.0 * (n as f64) * (n as f64) * 4.0;
        let what = format!("W1 at n = {n}");
        crate::train::fits_in_memory(&what, bytes, "three n x n f32 matrices")?;
    }
    let mut list: Vec<Workload> = args.workloads.iter().flat_map(|w| w.0.clone()).collect();
    list.dedup();
    let settings = settings(args);
    let json = args.json;
    if !json {
        println!(
            "{:<5} {:<28} {:>7} {:>10} {:>10} {:>10} {:>6} {:>8} {:>5}  figure",
            "id", "variant", "threads", "median", "min", "max", "steps", "peak MiB", "%peak"
        );
    }
    let mut print = |r: Record| {
        if json {
            println!("{}", serde_json::to_string(&r).expect("records serialise"));
        } else if let Ok(serde_json::Value::Object(r)) = serde_json::to_value(&r) {
            print_row(&r);
        }
    };
    for w in list {
        if w == Workload::W7 {
            w7(args)?;
        } else {
            tessera_bench::run(w, &settings, &mut print)?;
        }
    }
    Ok(())
}

fn settings(args: &BenchArgs) -> Settings {
    Settings {
        steps: args.steps,
        min_time: args.min_time,
        max_steps: args.max_steps,
        sizes: args.sizes.clone(),
    }
}

/// Whether `mpirun` started this process (with the feature `mpi`).
fn tessera_distributed_launched() -> bool {
    #[cfg(feature = "mpi")]
    return tessera_distributed::launched();
    #[cfg(not(feature = "mpi"))]
    false
}

/// One rank of W7 under `mpirun`: rank 0 prints its records as JSON lines.
fn w7_rank(args: &BenchArgs) -> Result<()> {
    let threads = args.threads.threads.unwrap_or(1);
    tessera_tensor::set_num_threads(threads);
    let comm = crate::dist::communicator(None)?;
    tessera_bench::w7(&settings(args), &*comm, &mut |r| {
        println!("{}", serde_json::to_string(&r).expect("records serialise"));
    })?;
    Ok(())
}

/// W7: `mpirun -n 1` and `mpirun -n RANKS` of this program, one after the other; the
/// second figure gets its scaling efficiency against the first.
fn w7(args: &BenchArgs) -> Result<()> {
    if !cfg!(feature = "mpi") {
        anyhow::bail!(
            "W7 runs on several ranks under mpirun: build the command with --features mpi \
             (see distributed/README.md)"
        );
    }
    let exe = std::env::current_exe()?;
    let threads = args.threads.threads.unwrap_or(1).to_string();
    let mut one_rank = None;
    for ranks in [1, args.ranks] {
        if ranks == 1 && one_rank.is_some() {
            continue;
        }
        let mut cmd = std::process::Command::new("mpirun");
        cmd.args([
            "-n",
            &ranks.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ]);
        // SAFETY: geteuid only reads the process's user id.
        #[cfg(unix)]
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--allow-run-as-root");
        }
        cmd.arg(&exe).args(["bench", "W7", "--threads", &threads]);
        cmd.args(["--steps", &args.steps.to_string()]);
        cmd.args(["--min-time", &args.min_time.to_string()]);
        cmd.args(["--max-steps", &args.max_steps.to_string()]);
        let output = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| anyhow::anyhow!("starting mpirun (is Open MPI installed?): {e}"))?;
        if !output.status.success() {
            anyhow::bail!("mpirun -n {ranks} of W7 failed ({})", output.status);
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(serde_json::Value::Object(mut r)) = serde_json::from_str(line) else {
                continue;
            };
            let median = r.get("median").and_then(serde_json::Value::as_f64);
            if let (Some("images/s"), Some(m)) = (r.get("figure").and_then(|f| f.as_str()), median)
            {
                if ranks == 1 {
                    one_rank = Some(m);
                } else if let Some(one) = one_rank {
                    let e = m / (ranks as f64 * one);
                    r.insert("scaling_efficiency".into(), e.into());
                }
            }
            if args.json {
                println!("{}", serde_json::Value::Object(r));
            } else {
                print_row(&r);
            }
        }
    }
    Ok(())
}

/// One line of the table from a record's JSON fields: the figures, the peak resident
/// set, the fraction of the cores' peak (W1, W1b), the scaling efficiency (W7), and a
/// warning where the threads got fewer cores than they are.
fn print_row(r: &serde_json::Map<String, serde_json::Value>) {
    let text = |k: &str| {
        r.get(k).map_or(String::new(), |v| match v.as_str() {
            Some(s) => s.to_string(),
            None => v.to_string(),
        })
    };
    let num = |k: &str| r.get(k).and_then(serde_json::Value::as_f64);
    let rss = num("peak_rss_mib").map_or("-".into(), |m| format!("{m:.0}"));
    let peak = num("peak_fraction").map_or("-".into(), |f| format!("{:.0}%", 100.0 * f));
    let mut notes = num("scaling_efficiency")
        .map_or(String::new(), |e| format!(" (scaling efficiency {e:.2})"));
    let threads = num("threads").unwrap_or(1.0);
    if let Some(cores) =
        num("cores_delivered").filter(|&c| c < tessera_bench::SHORT_OF_CORES * threads)
    {
        notes += &format!(" (disturbed: the {threads} threads got {cores:.1} cores)");
    }
    let nan = f64::NAN;
    println!(
        "{:<5} {:<28} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>6} {rss:>8} {peak:>5}  {}{notes}",
        text("workload"),
        text("variant"),
        text("threads"),
        num("median").unwrap_or(nan),
        num("min").unwrap_or(nan),
        num("max").unwrap_or(nan),
        text("steps"),
        text("figure")
    );
}
