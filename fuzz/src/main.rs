//! `tessera-fuzz`: runs the fuzz drivers and prints a table of what they found, or
//! replays one case.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use tessera_fuzz::runner::{self, human, table, Options, Report, MIB};
use tessera_fuzz::{Entry, PARSERS};

#[global_allocator]
static GLOBAL: tessera_fuzz::CountingAlloc = tessera_fuzz::CountingAlloc;

/// Fuzzes tessera's parsers of untrusted bytes with seeded, reproducible inputs.
#[derive(Parser, Debug)]
#[command(name = "tessera-fuzz", version, about)]
struct Args {
    /// Inputs per parser.
    #[arg(long, default_value_t = 10_000)]
    inputs: u64,
    /// Run only these parsers, comma-separated (see --list); one with --case.
    #[arg(long)]
    parser: Option<String>,
    /// The generator's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replay this one case (with --parser and --seed).
    #[arg(long, requires = "parser")]
    case: Option<u64>,
    /// The first case index (cases first .. first + inputs run).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// With --case: write the input's files into this folder.
    #[arg(long, requires = "case")]
    dump: Option<PathBuf>,
    /// Worker threads; each parser's cases are split between them.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// An input taking more CPU time than this (ms) counts as a hang.
    #[arg(long, default_value_t = 1000)]
    time_limit_ms: u64,
    /// Allocations over both the bound and this (MiB) are refused, ending the process
    /// with the case named.
    #[arg(long, default_value_t = 1024)]
    refuse_above_mib: usize,
    /// List the parsers and their seeds.
    #[arg(long)]
    list: bool,
}

fn main() {
    let args = Args::parse();
    // Workers run parsers side by side; the kernels' own threads would only compete.
    tessera_tensor::set_num_threads(1);
    let entries: Vec<&'static Entry> = match &args.parser {
        Some(names) => names
            .split(',')
            .map(|name| {
                tessera_fuzz::parser(name).unwrap_or_else(|| {
                    let names: Vec<&str> = PARSERS.iter().map(|e| e.name).collect();
                    eprintln!(
                        "unknown parser {name:?}; expected one of {}",
                        names.join(", ")
                    );
                    std::process::exit(2);
                })
            })
            .collect(),
        None => PARSERS.iter().collect(),
    };
    if args.case.is_some() && entries.len() != 1 {
        eprintln!("--case replays one parser's case: give one --parser");
        std::process::exit(2);
    }
    let opts = Options {
        seed: args.seed,
        first: args.first,
        inputs: args.inputs,
        time_limit: Duration::from_millis(args.time_limit_ms),
        refuse_above: args.refuse_above_mib * MIB,
        verbose: true,
    };
    let code = if args.list {
        list(&entries)
    } else if let Some(case) = args.case {
        replay(entries[0], case, &opts, args.dump.as_deref())
    } else {
        fuzz(&entries, &opts, args.jobs.max(1))
    };
    std::process::exit(code);
}

fn list(entries: &[&'static Entry]) -> i32 {
    for e in entries {
        println!("{}: {}", e.name, e.about);
        match (e.make)() {
            Ok(d) => {
                for s in d.seeds() {
                    let sizes: Vec<String> = s.parts.iter().map(|p| p.len().to_string()).collect();
                    println!("  seed {} ({} bytes)", s.name, sizes.join(" + "));
                }
            }
            Err(err) => println!("  cannot make the seeds: {err}"),
        }
    }
    0
}

fn replay(entry: &'static Entry, case: u64, opts: &Options, dump: Option<&std::path::Path>) -> i32 {
    let driver = match (entry.make)() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: cannot make the driver: {e}", entry.name);
            return 2;
        }
    };
    let input = runner::case_input(driver.as_ref(), entry.name, opts.seed, case);
    if let Some(dir) = dump {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("creating {}: {e}", dir.display());
            return 2;
        }
        for (i, p) in input.parts.iter().enumerate() {
            let path = dir.join(format!("{}-{}-{case}-part{i}.bin", entry.name, opts.seed));
            if let Err(e) = std::fs::write(&path, p) {
                eprintln!("writing {}: {e}", path.display());
                return 2;
            }
            println!("wrote {}", path.display());
        }
    }
    let scratch = tessera_fuzz::runner::scratch_dir().expect("a temporary folder");
    let seed_name = input.seed.map_or("random bytes".to_string(), |s| {
        driver.seeds()[s].name.clone()
    });
    let out = runner::run_one(
        driver.as_ref(),
        &input,
        scratch.path(),
        opts,
        (entry.name, case),
    );
    let sizes: Vec<String> = input.parts.iter().map(|p| p.len().to_string()).collect();
    println!(
        "parser {} seed {} case {}: {} bytes ({}) from {seed_name}",
        entry.name,
        opts.seed,
        case,
        input.len(),
        sizes.join(" + ")
    );
    let failed = match &out.result {
        Ok(Ok(())) => {
            println!("accepted");
            false
        }
        Ok(Err(e)) => {
            println!("refused: {e}");
            false
        }
        Err(panic) => {
            println!("PANIC: {panic}");
            true
        }
    };
    let slow = out.cpu > opts.time_limit;
    let huge = out.largest > out.bound || out.refused;
    println!(
        "time {:.3} ms of CPU ({:.3} ms of wall time){}; largest allocation {} of a bound of {}{}",
        out.cpu.as_secs_f64() * 1e3,
        out.elapsed.as_secs_f64() * 1e3,
        if slow { " (HANG)" } else { "" },
        human(out.largest),
        human(out.bound),
        if huge { " (OVER THE BOUND)" } else { "" }
    );
    i32::from(failed || slow || huge)
}

fn fuzz(entries: &[&'static Entry], opts: &Options, jobs: usize) -> i32 {
    let start = Instant::now();
    // Work items: each parser's cases cut into `jobs` ranges.
    let mut items = Vec::new();
    for (k, e) in entries.iter().enumerate() {
        let per = opts.inputs.div_ceil(jobs as u64).max(1);
        let mut first = opts.first;
        while first < opts.first + opts.inputs {
            let n = per.min(opts.first + opts.inputs - first);
            items.push((k, *e, first, n));
            first += n;
        }
    }
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Option<Report>>> = Mutex::new(vec![None; entries.len()]);
    let broken = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(k, entry, first, n)) = items.get(i) else {
                    break;
                };
                let driver = match (entry.make)() {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("{}: cannot make the driver: {e}", entry.name);
                        broken.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let dir = tessera_fuzz::runner::scratch_dir().expect("a temporary folder");
                let chunk = Options {
                    first,
                    inputs: n,
                    ..opts.clone()
                };
                let r = tessera_fuzz::run_cases(entry.name, driver.as_ref(), dir.path(), &chunk);
                eprintln!(
                    "{}: cases {first}..{} in {:.1} s, {} failures",
                    entry.name,
                    first + n,
                    r.elapsed.as_secs_f64(),
                    r.failures.len()
                );
                let mut all = reports.lock().expect("no worker panics holding the lock");
                match &mut all[k] {
                    Some(done) => done.merge(r),
                    slot => *slot = Some(r),
                }
            });
        }
    });
    let reports: Vec<Report> = reports
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .flatten()
        .collect();
    print!("{}", table(&reports));
    let failures: usize = reports.iter().map(|r| r.failures.len()).sum();
    println!(
        "{} parsers, seed {}, cases {}..{}, {jobs} job(s), {:.1} s in all; {failures} failures",
        reports.len(),
        opts.seed,
        opts.first,
        opts.first + opts.inputs,
        start.elapsed().as_secs_f64()
    );
    if !tessera_fuzz::alloc::installed() {
        println!("(the counting allocator is not installed: allocations were not measured)");
    }
    for f in reports.iter().flat_map(|r| &r.failures).take(20) {
        println!("{f}");
    }
    i32::from(failures > 0 || broken.load(Ordering::Relaxed) > 0)
}
