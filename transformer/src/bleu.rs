//! Corpus BLEU as sacreBLEU computes it by default: the `13a` tokenizer of mteval-v13a,
//! n-grams up to 4, clipped counts summed over the corpus, exponential smoothing of
//! empty n-gram orders, the brevity penalty, one reference per sentence.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

use crate::{Error, Result};

/// The `13a` tokenisation of a line (sacreBLEU's default; mteval-v13a's rules): unescape
/// four HTML entities, split off punctuation and symbols, periods and commas unless
/// they sit next to a digit, and dashes after a digit.
///
/// ```
/// use tessera_transformer::tokenize_13a;
/// assert_eq!(tokenize_13a("Hello, world! It costs 3,000.50 &amp; more."),
///            "Hello , world ! It costs 3,000.50 & more .");
/// ```
pub fn tokenize_13a(line: &str) -> String {
    static RULES: OnceLock<[(Regex, &str); 4]> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("a valid pattern");
        [
            (re(r"([\{-\~\[-\` -\&\(-\+\:-@/])"), " $1 "),
            (re(r"([^0-9])([\.,])"), "$1 $2 "),
            (re(r"([\.,])([^0-9])"), " $1 $2"),
            (re(r"([0-9])(-)"), "$1 $2 "),
        ]
    });
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (re, rep) in rules.iter() {
        line = re.replace_all(&line, *rep).into_owned();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A corpus BLEU score and its parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    /// BLEU, 0 to 100.
    pub score: f64,
    /// Modified n-gram precisions (percent), n = 1..4, smoothed where a count is zero.
    pub precisions: [f64; 4],
    /// Brevity penalty.
    pub brevity_penalty: f64,
    /// Matched n-grams per order.
    pub counts: [usize; 4],
    /// Hypothesis n-grams per order.
    pub totals: [usize; 4],
    /// Hypothesis tokens.
    pub sys_len: usize,
    /// Reference tokens.
    pub ref_len: usize,
}

impl std::fmt::Display for Bleu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.precisions;
        write!(
            f,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p[0],
            p[1],
            p[2],
            p[3],
            self.brevity_penalty,
            self.sys_len as f64 / self.ref_len.max(1) as f64,
            self.sys_len,
            self.ref_len
        )
    }
}

/// The counts of the `n`-grams of `tokens`, each n-gram a slice of them (nothing copied).
fn ngrams<'a>(tokens: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut out = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *out.entry(w).or_insert(0) += 1;
        }
    }
    out
}

/// Corpus BLEU of `hypotheses` against one reference each (sacreBLEU's defaults).
///
/// ```
/// use tessera_transformer::corpus_bleu;
/// let b = corpus_bleu(&["the cat sat on the mat"], &["the cat sat on the mat"])?;
/// assert!((b.score - 100.0).abs() < 1e-9);
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
pub fn corpus_bleu<S: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[S],
    references: &[R],
) -> Result<Bleu> {
    if hypotheses.len() != references.len() {
        return Err(Error::Count {
            op: "corpus_bleu",
            what: "hypotheses (one per reference)",
            expected: references.len(),
            got: hypotheses.len(),
        });
    }
    let (mut counts, mut totals) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (h, r) in hypotheses.iter().zip(references) {
        let (h, r) = (tokenize_13a(h.as_ref()), tokenize_13a(r.as_ref()));
        let ht: Vec<&str> = h.split(' ').filter(|s| !s.is_empty()).collect();
        let rt: Vec<&str> = r.split(' ').filter(|s| !s.is_empty()).collect();
        sys_len += ht.len();
        ref_len += rt.len();
        for n in 1..=4 {
            let (hn, rn) = (ngrams(&ht, n), ngrams(&rt, n));
            counts[n - 1] += hn
                .iter()
                .map(|(g, &c)| c.min(rn.get(*g).copied().unwrap_or(0)))
                .sum::<usize>();
            totals[n - 1] += ht.len().saturating_sub(n - 1);
        }
    }
    let brevity_penalty = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0f64; 4];
    // No match at all: 0, before any smoothing (as sacreBLEU).
    let score = if counts.iter().all(|&c| c == 0) {
        0.0
    } else {
        let mut smooth = 1.0f64;
        for n in 0..4 {
            if totals[n] == 0 {
                break;
            }
            precisions[n] = if counts[n] == 0 {
                smooth *= 2.0;
                100.0 / (smooth * totals[n] as f64)
            } else {
                100.0 * counts[n] as f64 / totals[n] as f64
            };
        }
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        brevity_penalty * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
    };
    Ok(Bleu {
        score,
        precisions,
        brevity_penalty,
        counts,
        totals,
        sys_len,
        ref_len,
    })
}
