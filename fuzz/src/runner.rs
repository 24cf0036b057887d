//! Running cases: each input under `catch_unwind`, timed, with its largest allocation
//! measured; a watchdog for inputs that never end and a report for the process
//! aborting (a refused allocation, a stack overflow), both naming the case to replay.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use crate::alloc::Watch;
use crate::input::{case_rng, generate};
use crate::{Driver, Input};

/// Bytes in a MiB.
pub const MIB: usize = 1 << 20;

/// The largest single allocation an input of `len` bytes may make: `64 × len + 64 MiB`.
pub fn bound(len: usize) -> usize {
    len.saturating_mul(64).saturating_add(64 * MIB)
}

/// How to run a parser's cases.
#[derive(Clone, Debug)]
pub struct Options {
    /// The generator's seed.
    pub seed: u64,
    /// The first case index.
    pub first: u64,
    /// How many cases.
    pub inputs: u64,
    /// An input taking more CPU time is a hang (CPU time, not wall time: on a machine
    /// busy with other work any input waits; the watchdog still ends an input that runs
    /// for 60 s of wall time).
    pub time_limit: Duration,
    /// Allocations above `max(bound, refuse_above)` are refused (the process then
    /// aborts, after printing the case).
    pub refuse_above: usize,
    /// Print each failure as it happens.
    pub verbose: bool,
}

impl Default for Options {
    /// Seed 0, cases `0..10000`, 1 s per input, refusals above 1 GiB, verbose.
    fn default() -> Options {
        Options {
            seed: 0,
            first: 0,
            inputs: 10_000,
            time_limit: Duration::from_secs(1),
            refuse_above: 1024 * MIB,
            verbose: true,
        }
    }
}

/// What went wrong with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The parser panicked.
    Panic,
    /// The input took longer than the time limit.
    Hang,
    /// An allocation above the input's [`bound`].
    Allocation,
}

/// One failing input.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// The parser.
    pub parser: &'static str,
    /// The generator's seed.
    pub seed: u64,
    /// The case index.
    pub case: u64,
    /// The panic message, the time taken or the allocation and its bound.
    pub detail: String,
}

impl Failure {
    /// The command that replays this input.
    pub fn replay(&self) -> String {
        replay_line(self.parser, self.seed, self.case)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            FailureKind::Panic => "panic",
            FailureKind::Hang => "hang",
            FailureKind::Allocation => "huge allocation",
        };
        write!(
            f,
            "FAIL {kind}: parser {} seed {} case {}: {}\n  replay: {}",
            self.parser,
            self.seed,
            self.case,
            self.detail,
            self.replay()
        )
    }
}

/// A folder for a driver's files: in `/dev/shm` where there is one, since writing the
/// same small file over and over on a disk file system waits on the disk (ext4 flushes
/// a file replaced by truncation when it is closed).
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("tessera-fuzz")
            .tempdir_in(shm)
        {
            return Ok(dir);
        }
    }
    tempfile::Builder::new().prefix("tessera-fuzz").tempdir()
}

/// The command that replays one case.
pub fn replay_line(parser: &str, seed: u64, case: u64) -> String {
    format!("cargo run --release -p tessera-fuzz -- --parser {parser} --seed {seed} --case {case}")
}

/// The figures of one parser's run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The parser.
    pub parser: &'static str,
    /// Inputs run.
    pub inputs: u64,
    /// Inputs the parser accepted (the rest it refused with an error).
    pub accepted: u64,
    /// Inputs that panicked.
    pub panics: u64,
    /// Inputs over the time limit (in CPU time).
    pub hangs: u64,
    /// Inputs with an allocation over their bound.
    pub huge: u64,
    /// The slowest input's CPU time.
    pub slowest: Duration,
    /// The slowest input's case index.
    pub slowest_case: u64,
    /// The largest allocation relative to its bound, and that bound.
    pub largest: (usize, usize),
    /// The largest input, in bytes.
    pub largest_input: usize,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Every failure.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Whether no input failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Adds another chunk's figures of the same parser.
    pub fn merge(&mut self, other: Report) {
        self.inputs += other.inputs;
        self.accepted += other.accepted;
        self.panics += other.panics;
        self.hangs += other.hangs;
        self.huge += other.huge;
        if other.slowest > self.slowest {
            self.slowest = other.slowest;
            self.slowest_case = other.slowest_case;
        }
        if ratio(other.largest) > ratio(self.largest) {
            self.largest = other.largest;
        }
        self.largest_input = self.largest_input.max(other.largest_input);
        self.elapsed = self.elapsed.max(other.elapsed);
        self.failures.extend(other.failures);
    }
}

fn ratio((size, bound): (usize, usize)) -> f64 {
    size as f64 / bound.max(1) as f64
}

/// `n` bytes in KiB, MiB or GiB.
pub fn human(n: usize) -> String {
    let n = n as f64;
    if n >= 1024.0 * MIB as f64 {
        format!("{:.1} GiB", n / (1024.0 * MIB as f64))
    } else if n >= MIB as f64 {
        format!("{:.1} MiB", n / MIB as f64)
    } else {
        format!("{:.1} KiB", n / 1024.0)
    }
}

/// The table of reports, one row per parser.
pub fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<14} {:>9} {:>9} {:>6} {:>5} {:>5} {:>10} {:>8} {:>22} {:>8}\n",
        "parser",
        "inputs",
        "accepted",
        "panics",
        "hangs",
        "huge",
        "slowest ms",
        "(case)",
        "largest alloc / bound",
        "time s"
    );
    for r in reports {
        let alloc = format!("{} / {}", human(r.largest.0), human(r.largest.1));
        out += &format!(
            "{:<14} {:>9} {:>9} {:>6} {:>5} {:>5} {:>10.2} {:>8} {:>22} {:>8.1}\n",
            r.parser,
            r.inputs,
            r.accepted,
            r.panics,
            r.hangs,
            r.huge,
            r.slowest.as_secs_f64() * 1e3,
            r.slowest_case,
            alloc,
            r.elapsed.as_secs_f64()
        );
    }
    out
}

/// The outcome of one input.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The parser's answer, or the panic message.
    pub result: Result<Result<(), String>, String>,
    /// Wall time taken.
    pub elapsed: Duration,
    /// CPU time taken by the input's thread (the drivers run single-threaded).
    pub cpu: Duration,
    /// The largest single allocation.
    pub largest: usize,
    /// The input's bound.
    pub bound: usize,
    /// Whether an allocation was refused.
    pub refused: bool,
}

/// The CPU time this thread has used so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the thread's CPU clock into `ts` and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The input of case `case` of a driver.
pub fn case_input(driver: &dyn Driver, parser: &str, seed: u64, case: u64) -> Input {
    let mut rng = case_rng(parser, seed, case);
    let extra = |input: &mut Input, rng: &mut crate::CaseRng| driver.mutate(input, rng);
    generate(driver.seeds(), driver.parts(), &mut rng, &extra)
}

/// Runs one input as the fuzzer does: caught, timed and measured.
pub fn run_one(
    driver: &dyn Driver,
    input: &Input,
    dir: &Path,
    opts: &Options,
    at: (&'static str, u64),
) -> Outcome {
    install_hooks();
    let bound = driver.bound(input.len());
    let slot = Slot::claim(at.0, opts.seed, at.1);
    let watch = Watch::start(bound.max(opts.refuse_above));
    let (start, cpu_start) = (Instant::now(), thread_cpu_time());
    CATCHING.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = catch_unwind(AssertUnwindSafe(|| driver.run(input, dir)));
    let message = CATCHING.with(|c| c.borrow_mut().take()).unwrap_or_default();
    let (elapsed, cpu) = (start.elapsed(), thread_cpu_time().saturating_sub(cpu_start));
    let (largest, refused) = watch.finish();
    drop(slot);
    Outcome {
        result: result.map_err(|_| message),
        elapsed,
        cpu,
        largest,
        bound,
        refused,
    }
}

/// Runs cases `opts.first .. opts.first + opts.inputs` of the parser `name` with
/// `driver`, its files under `dir`.
pub fn run_cases(name: &'static str, driver: &dyn Driver, dir: &Path, opts: &Options) -> Report {
    let start = Instant::now();
    let mut report = Report {
        parser: name,
        ..Report::default()
    };
    for case in opts.first..opts.first + opts.inputs {
        // A mutation that panics is the harness's bug, but it ends only its own case.
        let input = match catch_unwind(AssertUnwindSafe(|| {
            case_input(driver, name, opts.seed, case)
        })) {
            Ok(input) => input,
            Err(_) => {
                let f = Failure {
                    kind: FailureKind::Panic,
                    parser: name,
                    seed: opts.seed,
                    case,
                    detail: "generating the input panicked (a bug of the fuzz driver)".into(),
                };
                if opts.verbose {
                    eprintln!("{f}");
                }
                report.inputs += 1;
                report.panics += 1;
                report.failures.push(f);
                continue;
            }
        };
        let out = run_one(driver, &input, dir, opts, (name, case));
        report.inputs += 1;
        report.largest_input = report.largest_input.max(input.len());
        let fail = |kind, detail| Failure {
            kind,
            parser: name,
            seed: opts.seed,
            case,
            detail,
        };
        let mut failures = Vec::new();
        match &out.result {
            Ok(Ok(())) => report.accepted += 1,
            Ok(Err(_)) => {}
            Err(msg) => {
                report.panics += 1;
                failures.push(fail(FailureKind::Panic, msg.clone()));
            }
        }
        if out.cpu > opts.time_limit {
            report.hangs += 1;
            let (cpu, wall) = (out.cpu.as_secs_f64() * 1e3, out.elapsed.as_secs_f64() * 1e3);
            let detail = format!("took {cpu:.0} ms of CPU time ({wall:.0} ms of wall time)");
            failures.push(fail(FailureKind::Hang, detail));
        }
        if out.largest > out.bound || out.refused {
            report.huge += 1;
            let detail = format!(
                "allocation of {} bytes, bound {} bytes for {} input bytes",
                out.largest,
                out.bound,
                input.len()
            );
            failures.push(fail(FailureKind::Allocation, detail));
        }
        if out.cpu > report.slowest {
            report.slowest = out.cpu;
            report.slowest_case = case;
        }
        if ratio((out.largest, out.bound)) > ratio(report.largest) {
            report.largest = (out.largest, out.bound);
        }
        for f in failures {
            if opts.verbose {
                eprintln!("{f}");
            }
            report.failures.push(f);
        }
    }
    report.elapsed = start.elapsed();
    report
}

thread_local! {
    /// While an input runs: the message of its panic, if any.
    static CATCHING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Cases in progress, for the watchdog and the abort report.
struct Slot {
    busy: AtomicBool,
    name: AtomicUsize,
    name_len: AtomicUsize,
    seed: AtomicU64,
    case: AtomicU64,
    started_ms: AtomicU64,
    /// The running thread (`pthread_self`), to tell which case aborted.
    thread: AtomicU64,
}

const SLOTS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    busy: AtomicBool::new(false),
    name: AtomicUsize::new(0),
    name_len: AtomicUsize::new(0),
    seed: AtomicU64::new(0),
    case: AtomicU64::new(0),
    started_ms: AtomicU64::new(0),
    thread: AtomicU64::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

/// The watchdog ends the process when one input runs this long.
static ABORT_AFTER_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets how long one input may run before the watchdog ends the process (default 60 s;
/// inputs over the time limit but under this are counted as hangs and the run goes on).
pub fn set_abort_after(limit: Duration) {
    ABORT_AFTER_MS.store(limit.as_millis() as u64, Ordering::Relaxed);
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A claimed entry of [`TABLE`], freed on drop.
struct Claim(Option<&'static Slot>);

impl Slot {
    fn claim(name: &'static str, seed: u64, case: u64) -> Claim {
        let now = clock();
        let slot = TABLE.iter().find(|s| {
            s.busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(s) = slot {
            s.name.store(name.as_ptr() as usize, Ordering::Relaxed);
            s.name_len.store(name.len(), Ordering::Relaxed);
            s.seed.store(seed, Ordering::Relaxed);
            s.case.store(case, Ordering::Relaxed);
            s.thread.store(this_thread(), Ordering::Relaxed);
            s.started_ms.store(now, Ordering::Release);
        }
        Claim(slot)
    }

    /// Writes "parser X seed S case N" and the replay command to stderr without
    /// allocating (this runs in a signal handler).
    fn report(&self, why: &[u8]) {
        let (ptr, len) = (
            self.name.load(Ordering::Relaxed),
            self.name_len.load(Ordering::Relaxed),
        );
        // SAFETY: `ptr` and `len` were stored together from a `&'static str`.
        let name = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let mut buf = [0u8; 512];
        let mut w = Writer {
            buf: &mut buf,
            len: 0,
        };
        let (seed, case) = (
            self.seed.load(Ordering::Relaxed),
            self.case.load(Ordering::Relaxed),
        );
        w.put(b"\ntessera-fuzz: ");
        w.put(why);
        w.case([b" in parser ", b" seed ", b" case "], name, seed, case);
        w.case(
            [
                b"\n  replay: cargo run --release -p tessera-fuzz -- --parser ",
                b" --seed ",
                b" --case ",
            ],
            name,
            seed,
            case,
        );
        w.put(b"\n");
        let n = w.len;
        write_stderr(&buf[..n]);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.busy.store(false, Ordering::Release);
        }
    }
}

/// A fixed buffer written without allocating.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    /// Writes the parser's name, the seed and the case, each after its label.
    fn case(&mut self, labels: [&[u8]; 3], name: &[u8], seed: u64, case: u64) {
        self.put(labels[0]);
        self.put(name);
        self.put(labels[1]);
        self.num(seed);
        self.put(labels[2]);
        self.num(case);
    }
}

/// An identifier of the calling thread that a signal handler can read too.
fn this_thread() -> u64 {
    #[cfg(unix)]
    // SAFETY: pthread_self has no preconditions and is async-signal-safe.
    return unsafe { libc::pthread_self() } as u64;
    #[cfg(not(unix))]
    0
}

fn write_stderr(bytes: &[u8]) {
    #[cfg(unix)]
    // SAFETY: write(2) on fd 2 with a valid buffer is async-signal-safe.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(bytes);
    }
}

/// Installs, once: the panic hook that keeps a caught input's panic message, the
/// watchdog thread, and (on Unix) the SIGABRT handler that names the case in progress
/// when the process aborts.
fn install_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = CATCHING.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(msg) => {
                        let text = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".to_string());
                        let at = info
                            .location()
                            .map(|l| format!(" at {}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        *msg = format!("{text}{at}");
                        true
                    }
                    None => false,
                }
            });
            if !caught {
                default(info);
            }
        }));
        std::thread::Builder::new()
            .name("tessera-fuzz-watchdog".into())
            .spawn(watchdog)
            .expect("spawning the watchdog");
        #[cfg(unix)]
        // SAFETY: installs a handler that only reads atomics and calls write(2); with
        // SA_RESETHAND the next SIGABRT (abort's own re-raise) ends the process.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_abort as *const () as usize;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
        }
    });
}

#[cfg(unix)]
extern "C" fn on_abort(_: libc::c_int) {
    // abort() raises the signal in the thread that called it.
    let me = this_thread();
    for s in TABLE.iter().filter(|s| s.busy.load(Ordering::Acquire)) {
        if s.thread.load(Ordering::Relaxed) == me {
            s.report(b"the process aborted (a refused allocation, a stack overflow?)");
        }
    }
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = clock();
        let limit = ABORT_AFTER_MS.load(Ordering::Relaxed);
        for s in TABLE.iter().filter(|s| s.busy.load(Ordering::Acquire)) {
            if now.saturating_sub(s.started_ms.load(Ordering::Acquire)) > limit {
                s.report(b"an input ran past the watchdog's limit (a hang)");
                std::process::exit(3);
            }
        }
    }
}
