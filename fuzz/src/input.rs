//! Inputs and their generation: random bytes, or a real seed file mutated by a few of
//! the operators below, all drawn from one ChaCha generator per case, so that a parser's
//! name, a seed and a case index give the same bytes on every machine.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator of one case.
pub type CaseRng = ChaCha8Rng;

/// Largest part an input keeps after mutation (inserted ranges and splices are cut).
pub const MAX_PART: usize = 64 * 1024;

/// What a part holds, which decides the mutations it gets besides the byte-level ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A binary file.
    Binary,
    /// Text: numbers are swapped for extreme ones, lines duplicated, tokens inserted.
    Text,
}

/// An integer field of a binary header, for the length and count mutations (0, huge,
/// negative-looking, off by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The part holding it.
    pub part: usize,
    /// Its byte offset.
    pub at: usize,
    /// Its width in bytes: 1, 2, 4 or 8.
    pub width: usize,
    /// Big-endian (IDX, PNG, JPEG) rather than little-endian (safetensors).
    pub big_endian: bool,
}

/// A real file (or set of files) that inputs are mutated from.
#[derive(Clone, Debug)]
pub struct Seed {
    /// What it is, for `--list`.
    pub name: String,
    /// The files' bytes, in the order the driver reads them.
    pub parts: Vec<Vec<u8>>,
    /// What each part holds.
    pub kinds: Vec<Kind>,
    /// Offsets where a header or record ends, per part: truncation points.
    pub boundaries: Vec<Vec<usize>>,
    /// Integer fields of the headers.
    pub fields: Vec<Field>,
}

impl Seed {
    /// A seed of one part without annotations.
    pub fn one(name: impl Into<String>, bytes: Vec<u8>, kind: Kind) -> Seed {
        Seed {
            name: name.into(),
            parts: vec![bytes],
            kinds: vec![kind],
            boundaries: vec![Vec::new()],
            fields: Vec::new(),
        }
    }

    /// A seed of several parts of one kind, without annotations.
    pub fn parts(name: impl Into<String>, parts: Vec<Vec<u8>>, kind: Kind) -> Seed {
        let n = parts.len();
        Seed {
            name: name.into(),
            parts,
            kinds: vec![kind; n],
            boundaries: vec![Vec::new(); n],
            fields: Vec::new(),
        }
    }

    /// Adds truncation points to part `part`.
    pub fn with_boundaries(mut self, part: usize, at: impl IntoIterator<Item = usize>) -> Seed {
        self.boundaries[part].extend(at);
        self
    }

    /// Adds an integer field.
    pub fn with_field(mut self, part: usize, at: usize, width: usize, big_endian: bool) -> Seed {
        self.fields.push(Field {
            part,
            at,
            width,
            big_endian,
        });
        self
    }
}

/// One input: the bytes of each file a driver reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// The files' bytes.
    pub parts: Vec<Vec<u8>>,
    /// Which seed it was mutated from (`None`: random bytes).
    pub seed: Option<usize>,
}

impl Input {
    /// Total bytes over all parts (what the allocation bound scales with).
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    /// Whether every part is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Part `i` as text (invalid UTF-8 replaced by U+FFFD), for parsers that take `&str`.
    pub fn text(&self, i: usize) -> String {
        String::from_utf8_lossy(self.parts.get(i).map_or(&[][..], Vec::as_slice)).into_owned()
    }
}

/// FNV-1a of a name, to give each parser its own stream of cases.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generator of case `case` of parser `parser` under `seed`: cases are independent
/// streams, so one replays without the ones before it.
pub fn case_rng(parser: &str, seed: u64, case: u64) -> CaseRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash(parser));
    rng.set_stream(case);
    rng
}

/// Random bytes, short more often than long.
pub fn random_bytes(rng: &mut CaseRng, kind: Kind) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0..=3 => rng.random_range(0..16),
        4..=7 => rng.random_range(0..512),
        _ => rng.random_range(0..8192),
    };
    let mut out = vec![0u8; len];
    if kind == Kind::Text && rng.random_bool(0.5) {
        let alphabet = b"0123456789,.-+eE \n\t\"{}[]:=#abcxyz_\\";
        out.iter_mut()
            .for_each(|b| *b = alphabet[rng.random_range(0..alphabet.len())]);
    } else {
        rng.fill_bytes(&mut out);
    }
    out
}

/// Integers that break length and count arithmetic.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Numbers and tokens that break text parsers.
const TEXT_TOKENS: [&str; 32] = [
    "0",
    "-1",
    "1",
    "-0",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e308",
    "1e999",
    "-1e999",
    "NaN",
    "inf",
    "0.5",
    "1e-400",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "\n",
    "\u{0}",
    "é",
    "\u{fffd}",
    "🦀",
];

/// Mutations applied to a copy of a seed; a driver adds its own through
/// [`crate::Driver::mutate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    FlipBits,
    SetByte,
    TruncateAtBoundary,
    Truncate,
    SetField,
    Insert,
    Delete,
    Duplicate,
    Splice,
    TextNumber,
    TextToken,
    TextLine,
    Nest,
}

const BINARY_OPS: [Op; 9] = [
    Op::FlipBits,
    Op::SetByte,
    Op::TruncateAtBoundary,
    Op::Truncate,
    Op::SetField,
    Op::Insert,
    Op::Delete,
    Op::Duplicate,
    Op::Splice,
];

/// Applies one generic mutation to part `p` of `input`, which came from `seeds[s]`.
pub fn mutate_generic(input: &mut Input, p: usize, seeds: &[Seed], s: usize, rng: &mut CaseRng) {
    let seed = &seeds[s];
    let kind = seed.kinds.get(p).copied().unwrap_or(Kind::Binary);
    let op = if kind == Kind::Text && rng.random_bool(0.6) {
        [Op::TextNumber, Op::TextToken, Op::TextLine, Op::Nest][rng.random_range(0..4)]
    } else {
        BINARY_OPS[rng.random_range(0..BINARY_OPS.len())]
    };
    let part = &mut input.parts[p];
    match op {
        Op::FlipBits => {
            for _ in 0..rng.random_range(1..=4) {
                if !part.is_empty() {
                    let i = rng.random_range(0..part.len());
                    part[i] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        Op::SetByte => {
            if !part.is_empty() {
                let i = rng.random_range(0..part.len());
                part[i] = [0, 0xff, 0x7f, 0x80, rng.random()][rng.random_range(0..5)];
            }
        }
        Op::TruncateAtBoundary => {
            let b = &seed.boundaries[p];
            let at = if b.is_empty() || rng.random_bool(0.2) {
                rng.random_range(0..=part.len())
            } else {
                // The boundary itself, or one byte either side of it.
                let at = b[rng.random_range(0..b.len())] as i64 + rng.random_range(-1i64..=1);
                at.max(0) as usize
            };
            part.truncate(at);
        }
        Op::Truncate => {
            let at = rng.random_range(0..=part.len());
            part.truncate(at);
        }
        Op::SetField => {
            let fields: Vec<&Field> = seed.fields.iter().filter(|f| f.part == p).collect();
            if fields.is_empty() {
                return mutate_generic(input, p, seeds, s, rng);
            }
            set_field(part, fields[rng.random_range(0..fields.len())], rng);
        }
        Op::Insert => {
            let at = rng.random_range(0..=part.len());
            let n = rng.random_range(1..=64);
            let mut bytes = vec![0u8; n];
            rng.fill_bytes(&mut bytes);
            part.splice(at..at, bytes);
        }
        Op::Delete => {
            if !part.is_empty() {
                let a = rng.random_range(0..part.len());
                let b = (a + rng.random_range(1..=64)).min(part.len());
                part.drain(a..b);
            }
        }
        Op::Duplicate => {
            if !part.is_empty() {
                let a = rng.random_range(0..part.len());
                let b = (a + rng.random_range(1..=256)).min(part.len());
                let chunk = part[a..b].to_vec();
                let at = rng.random_range(0..=part.len());
                part.splice(at..at, chunk);
            }
        }
        Op::Splice => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            let src = &other.parts[rng.random_range(0..other.parts.len())];
            if !src.is_empty() {
                let at = rng.random_range(0..=part.len());
                let from = rng.random_range(0..src.len());
                part.truncate(at);
                part.extend_from_slice(&src[from..]);
            }
        }
        Op::TextNumber => text_number(part, rng),
        Op::TextToken => {
            let at = char_boundary(part, rng.random_range(0..=part.len()));
            let token = TEXT_TOKENS[rng.random_range(0..TEXT_TOKENS.len())];
            part.splice(at..at, token.bytes());
        }
        Op::TextLine => text_line(part, rng),
        Op::Nest => {
            let at = char_boundary(part, rng.random_range(0..=part.len()));
            let depth = [3, 64, 200, 5000][rng.random_range(0..4)];
            let open = ["[", "{\"a\":", "a = [", "[[", "{"][rng.random_range(0..5)];
            part.splice(at..at, open.repeat(depth).into_bytes());
        }
    }
    part.truncate(MAX_PART);
}

/// Writes an interesting value into an integer field.
fn set_field(part: &mut [u8], f: &Field, rng: &mut CaseRng) {
    if f.at + f.width > part.len() {
        return;
    }
    let bytes = &mut part[f.at..f.at + f.width];
    let old = if f.big_endian {
        bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
    } else {
        bytes
            .iter()
            .rev()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b))
    };
    let v = match rng.random_range(0..6) {
        0 => INTERESTING[rng.random_range(0..INTERESTING.len())],
        1 => old.wrapping_add(1),
        2 => old.wrapping_sub(1),
        3 => old.wrapping_mul(2),
        4 => old / 2,
        _ => rng.random(),
    };
    for (k, b) in bytes.iter_mut().enumerate() {
        let shift = if f.big_endian { f.width - 1 - k } else { k };
        *b = (v >> (8 * shift)) as u8;
    }
}

/// The nearest UTF-8 character boundary at or after `at` (text stays valid text when it
/// was).
fn char_boundary(part: &[u8], mut at: usize) -> usize {
    while at < part.len() && (part[at] & 0xc0) == 0x80 {
        at += 1;
    }
    at
}

/// Replaces one run of digits with an extreme number.
fn text_number(part: &mut Vec<u8>, rng: &mut CaseRng) {
    let starts: Vec<usize> = (0..part.len())
        .filter(|&i| part[i].is_ascii_digit() && (i == 0 || !part[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let a = starts[rng.random_range(0..starts.len())];
    let b = (a..part.len())
        .find(|&i| !part[i].is_ascii_digit())
        .unwrap_or(part.len());
    let token = TEXT_TOKENS[rng.random_range(0..16)];
    part.splice(a..b, token.bytes());
}

/// Duplicates, deletes or swaps whole lines (duplicated keys, repeated rows).
fn text_line(part: &mut Vec<u8>, rng: &mut CaseRng) {
    let mut lines: Vec<Vec<u8>> = part.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    let i = rng.random_range(0..n);
    match rng.random_range(0..3) {
        0 => {
            let l = lines[i].clone();
            lines.insert(rng.random_range(0..=n), l);
        }
        1 if n > 1 => {
            lines.remove(i);
        }
        _ => lines.swap(i, rng.random_range(0..n)),
    }
    *part = lines.join(&b'\n');
}

/// Mutations of JSON text that keep it JSON: a number, string or key of the document
/// replaced, removed or duplicated (duplicated keys are written twice as text, which a
/// map of values cannot hold).
pub fn mutate_json(text: &[u8], rng: &mut CaseRng) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(text).ok()?;
    let mut nodes = 0;
    count_nodes(&value, &mut nodes);
    let target = rng.random_range(0..nodes.max(1));
    let mut seen = 0;
    let mut duplicate = None;
    mutate_node(&mut value, target, &mut seen, rng, &mut duplicate);
    let mut out = serde_json::to_vec(&value).ok()?;
    if let Some(key) = duplicate {
        // `{"key":...` becomes `{"key":<v>,"key":...`.
        let pattern = format!("\"{key}\":");
        if let Some(at) = find(&out, pattern.as_bytes()) {
            let v = ["0", "null", "\"x\"", "{}", "[]", "-1", "1e999"][rng.random_range(0..7)];
            let dup = format!("{pattern}{v},");
            out.splice(at..at, dup.into_bytes());
        }
    }
    Some(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count_nodes(v: &serde_json::Value, n: &mut usize) {
    *n += 1;
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| count_nodes(x, n)),
        serde_json::Value::Object(m) => m.values().for_each(|x| count_nodes(x, n)),
        _ => {}
    }
}

/// A value that stresses whatever reads it.
fn odd_value(rng: &mut CaseRng) -> serde_json::Value {
    use serde_json::json;
    match rng.random_range(0..16) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(u32::MAX as u64 + 1),
        4 => json!(1u64 << 40),
        5 => json!(1e300),
        6 => json!(-0.0),
        7 => json!(0.5),
        8 => json!(null),
        9 => json!(""),
        10 => json!("\u{0}é🦀"),
        11 => json!([]),
        12 => json!({}),
        13 => json!(true),
        14 => json!([u64::MAX, 0]),
        _ => json!(rng.random_range(0..100_000u64)),
    }
}

fn mutate_node(
    v: &mut serde_json::Value,
    target: usize,
    seen: &mut usize,
    rng: &mut CaseRng,
    duplicate: &mut Option<String>,
) -> bool {
    if *seen == target {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() && rng.random_bool(0.5) => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let key = keys[rng.random_range(0..keys.len())].clone();
                match rng.random_range(0..3) {
                    0 => {
                        m.remove(&key);
                    }
                    1 => *duplicate = Some(key),
                    _ => {
                        m.insert(format!("{key}_extra"), odd_value(rng));
                    }
                }
            }
            serde_json::Value::Array(a) if !a.is_empty() && rng.random_bool(0.5) => {
                let i = rng.random_range(0..a.len());
                if rng.random_bool(0.5) {
                    a.remove(i);
                } else {
                    let x = a[i].clone();
                    a.insert(i, x);
                }
            }
            _ => *v = odd_value(rng),
        }
        return true;
    }
    *seen += 1;
    match v {
        serde_json::Value::Array(a) => a
            .iter_mut()
            .any(|x| mutate_node(x, target, seen, rng, duplicate)),
        serde_json::Value::Object(m) => m
            .values_mut()
            .any(|x| mutate_node(x, target, seen, rng, duplicate)),
        _ => false,
    }
}

/// Builds case `case`'s input from `seeds` (and random bytes for about one case in
/// twelve, or always when there are no seeds), with `parts` parts.
pub fn generate(
    seeds: &[Seed],
    parts: usize,
    rng: &mut CaseRng,
    extra: &dyn Fn(&mut Input, &mut CaseRng),
) -> Input {
    if seeds.is_empty() || rng.random_range(0..12) == 0 {
        let kind = seeds
            .first()
            .and_then(|s| s.kinds.first().copied())
            .unwrap_or(Kind::Binary);
        return Input {
            parts: (0..parts).map(|_| random_bytes(rng, kind)).collect(),
            seed: None,
        };
    }
    let s = rng.random_range(0..seeds.len());
    let mut input = Input {
        parts: seeds[s].parts.clone(),
        seed: Some(s),
    };
    // 1 mutation half the time, up to 8 otherwise.
    let n = if rng.random_bool(0.5) {
        1
    } else {
        rng.random_range(2..=8)
    };
    for _ in 0..n {
        if rng.random_bool(0.3) {
            extra(&mut input, rng);
        } else {
            let p = rng.random_range(0..input.parts.len());
            mutate_generic(&mut input, p, seeds, s, rng);
        }
    }
    input
}
