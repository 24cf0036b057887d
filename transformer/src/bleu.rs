//! BLEU and chrF as sacreBLEU 2.x computes them. By default: the `13a` tokenizer of
//! mteval-v13a, n-grams up to 4, clipped counts summed over the corpus, exponential
//! smoothing of empty n-gram orders, the brevity penalty; and sacreBLEU's options: the
//! `intl`, `char` and `none` tokenizers, lowercasing, the other smoothing methods,
//! several references per sentence, sentence BLEU with the effective order, chrF and
//! chrF++.

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

/// How BLEU splits a line into tokens (sacreBLEU's `tokenize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tokenize {
    /// `13a`, mteval-v13a's rules ([`tokenize_13a`]): sacreBLEU's default.
    #[default]
    Thirteen,
    /// `intl`, mteval-v14's international rules: Unicode punctuation split off unless
    /// between digits, Unicode symbols split off.
    Intl,
    /// `char`: every character a token.
    Char,
    /// `none`: the line's own spaces.
    None,
}

impl Tokenize {
    /// The tokenised line, tokens separated by single spaces.
    ///
    /// ```
    /// use tessera_transformer::Tokenize;
    /// assert_eq!(Tokenize::Intl.apply("Preis: 3,50€ (netto)."), "Preis : 3,50 € ( netto ) .");
    /// assert_eq!(Tokenize::Char.apply("ab c"), "a b c");
    /// ```
    pub fn apply(self, line: &str) -> String {
        match self {
            Tokenize::Thirteen => tokenize_13a(line),
            Tokenize::Intl => {
                static RULES: OnceLock<[(Regex, &str); 3]> = OnceLock::new();
                let rules = RULES.get_or_init(|| {
                    let re = |p: &str| Regex::new(p).expect("a valid pattern");
                    [
                        (re(r"(\P{N})(\p{P})"), "$1 $2 "),
                        (re(r"(\p{P})(\P{N})"), " $1 $2"),
                        (re(r"(\p{S})"), " $1 "),
                    ]
                });
                let mut line = line.to_string();
                for (re, rep) in rules.iter() {
                    line = re.replace_all(&line, *rep).into_owned();
                }
                line.split_whitespace().collect::<Vec<_>>().join(" ")
            }
            Tokenize::Char => line
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(String::from)
                .collect::<Vec<_>>()
                .join(" "),
            Tokenize::None => line.to_string(),
        }
    }
}

/// How BLEU treats an n-gram order without a match (sacreBLEU's `smooth_method`; the
/// methods of Chen and Cherry, 2014).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Smooth {
    /// `none`: a zero precision makes BLEU 0.
    None,
    /// `floor`: a zero count counts as this (0.1 in sacreBLEU).
    Floor(f64),
    /// `add-k`: this added to the counts and totals of orders 2 and up (1 in sacreBLEU).
    AddK(f64),
    /// `exp`: each successive empty order gets half the precision of the one before
    /// (mteval-v13a's NIST smoothing): sacreBLEU's default.
    #[default]
    Exp,
}

/// The settings of [`corpus_bleu_with`] (sacreBLEU's `BLEU(...)` arguments).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BleuOptions {
    /// `lowercase`: compare without case.
    pub lowercase: bool,
    /// `tokenize`.
    pub tokenize: Tokenize,
    /// `smooth_method` (with its `smooth_value`).
    pub smooth: Smooth,
    /// `effective_order`: average only the orders the hypothesis has n-grams of (for
    /// sentences shorter than four tokens; sacreBLEU's `sentence_bleu` sets it).
    pub effective_order: bool,
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
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
    corpus_bleu_with(hypotheses, &[references], &BleuOptions::default())
}

/// Corpus BLEU as sacreBLEU's `corpus_bleu(hypotheses, references, ...)`: `references`
/// holds one or more streams, each with one reference per hypothesis; each sentence's
/// n-grams are clipped by their largest count in any of its references, and its
/// reference length is the one closest to its own (the shorter on a tie).
///
/// ```
/// use tessera_transformer::{corpus_bleu_with, BleuOptions, Tokenize};
/// let hyp = ["The Cat sat on the mat."];
/// let (a, b) = (["the cat sat on a mat ."], ["a cat was on the mat ."]);
/// let options = BleuOptions { lowercase: true, tokenize: Tokenize::Intl, ..Default::default() };
/// let two = corpus_bleu_with(&hyp, &[&a[..], &b[..]], &options)?;
/// let one = corpus_bleu_with(&hyp, &[&a[..]], &options)?;
/// assert!(two.score > one.score);
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
pub fn corpus_bleu_with<S: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[S],
    references: &[&[R]],
    options: &BleuOptions,
) -> Result<Bleu> {
    check_streams("corpus_bleu", hypotheses.len(), references)?;
    let prepare = |line: &str| {
        let line = if options.lowercase {
            line.to_lowercase()
        } else {
            line.to_string()
        };
        options.tokenize.apply(line.trim_end())
    };
    let (mut counts, mut totals) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (i, h) in hypotheses.iter().enumerate() {
        let h = prepare(h.as_ref());
        let ht = words(&h);
        let refs: Vec<String> = references.iter().map(|r| prepare(r[i].as_ref())).collect();
        let rts: Vec<Vec<&str>> = refs.iter().map(|r| words(r)).collect();
        sys_len += ht.len();
        // The closest reference length, the shorter one on a tie.
        let mut closest: Option<(usize, usize)> = None;
        for rt in &rts {
            let diff = rt.len().abs_diff(ht.len());
            if closest.is_none_or(|(d, l)| diff < d || (diff == d && rt.len() < l)) {
                closest = Some((diff, rt.len()));
            }
        }
        ref_len += closest.map_or(0, |(_, l)| l);
        for n in 1..=4 {
            let hn = ngrams(&ht, n);
            let mut most: HashMap<&[&str], usize> = HashMap::new();
            for rt in &rts {
                for (g, c) in ngrams(rt, n) {
                    let m = most.entry(g).or_insert(0);
                    *m = (*m).max(c);
                }
            }
            counts[n - 1] += hn
                .iter()
                .map(|(g, &c)| c.min(most.get(*g).copied().unwrap_or(0)))
                .sum::<usize>();
            totals[n - 1] += ht.len().saturating_sub(n - 1);
        }
    }
    Ok(compute_bleu(counts, totals, sys_len, ref_len, options))
}

/// Sentence BLEU as sacreBLEU's `sentence_bleu(hypothesis, references)`: one sentence
/// against one or more references, with the effective order and exponential smoothing.
///
/// ```
/// use tessera_transformer::sentence_bleu;
/// // Two tokens: only orders 1 and 2 count, both exact.
/// assert!((sentence_bleu("a cat", &["a cat"])?.score - 100.0).abs() < 1e-9);
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
pub fn sentence_bleu<R: AsRef<str>>(hypothesis: &str, references: &[R]) -> Result<Bleu> {
    let streams: Vec<[&str; 1]> = references.iter().map(|r| [r.as_ref()]).collect();
    let streams: Vec<&[&str]> = streams.iter().map(|s| &s[..]).collect();
    let options = BleuOptions {
        effective_order: true,
        ..BleuOptions::default()
    };
    corpus_bleu_with(&[hypothesis], &streams, &options)
}

/// An error unless there is at least one stream and each holds `n` lines.
fn check_streams<R>(op: &'static str, n: usize, references: &[&[R]]) -> Result<()> {
    if references.is_empty() {
        return Err(Error::Count {
            op,
            what: "reference streams (at least)",
            expected: 1,
            got: 0,
        });
    }
    for r in references {
        if r.len() != n {
            return Err(Error::Count {
                op,
                what: "references (one per hypothesis)",
                expected: n,
                got: r.len(),
            });
        }
    }
    Ok(())
}

/// BLEU from its sufficient statistics (sacreBLEU's `BLEU.compute_bleu`).
fn compute_bleu(
    counts: [usize; 4],
    totals: [usize; 4],
    sys_len: usize,
    ref_len: usize,
    options: &BleuOptions,
) -> Bleu {
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
        let (mut correct, mut total) = (counts.map(|c| c as f64), totals.map(|t| t as f64));
        let mut smooth = 1.0f64;
        let mut order = 4;
        for n in 0..4 {
            if let (Smooth::AddK(k), true) = (options.smooth, n > 0) {
                correct[n] += k;
                total[n] += k;
            }
            if total[n] == 0.0 {
                break;
            }
            if options.effective_order {
                order = n + 1;
            }
            precisions[n] = if correct[n] == 0.0 {
                match options.smooth {
                    Smooth::Exp => {
                        smooth *= 2.0;
                        100.0 / (smooth * total[n])
                    }
                    Smooth::Floor(v) => 100.0 * v / total[n],
                    _ => 0.0,
                }
            } else {
                100.0 * correct[n] / total[n]
            };
        }
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let mean = precisions[..order].iter().map(|&p| log(p)).sum::<f64>() / order as f64;
        brevity_penalty * mean.exp()
    };
    Bleu {
        score,
        precisions,
        brevity_penalty,
        counts,
        totals,
        sys_len,
        ref_len,
    }
}

/// The settings of chrF (sacreBLEU's `CHRF(...)`): character n-grams up to
/// `char_order`, word n-grams up to `word_order` (2 gives chrF++), the F-score's `beta`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChrfOptions {
    /// `char_order` (6).
    pub char_order: usize,
    /// `word_order` (0; 2 for chrF++).
    pub word_order: usize,
    /// `beta` (2: recall counts twice as much as precision).
    pub beta: f64,
    /// `lowercase` (false).
    pub lowercase: bool,
    /// `whitespace`: keep spaces in the character n-grams (false).
    pub whitespace: bool,
    /// `eps_smoothing`: average the F-scores of all orders, as chrF++.py does, rather
    /// than the precisions and recalls of the orders present (false).
    pub eps_smoothing: bool,
}

impl Default for ChrfOptions {
    /// sacreBLEU's defaults: chrF with 6-character n-grams, beta 2.
    fn default() -> ChrfOptions {
        ChrfOptions {
            char_order: 6,
            word_order: 0,
            beta: 2.0,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfOptions {
    /// chrF++: chrF with word unigrams and bigrams.
    pub fn plus_plus() -> ChrfOptions {
        ChrfOptions {
            word_order: 2,
            ..ChrfOptions::default()
        }
    }

    /// The n-gram counts of each order of `line`: characters, then words.
    fn ngrams(&self, line: &str) -> Vec<HashMap<String, usize>> {
        let chars: Vec<char> = if self.whitespace {
            line.chars().collect()
        } else {
            line.chars().filter(|c| !c.is_whitespace()).collect()
        };
        let mut out = Vec::with_capacity(self.char_order + self.word_order);
        for n in 1..=self.char_order {
            let mut counts = HashMap::new();
            for w in chars.windows(n) {
                *counts.entry(w.iter().collect::<String>()).or_insert(0) += 1;
            }
            out.push(counts);
        }
        if self.word_order > 0 {
            let words = chrf_words(line);
            for n in 1..=self.word_order {
                let mut counts = HashMap::new();
                for w in words.windows(n) {
                    *counts.entry(w.join(" ")).or_insert(0) += 1;
                }
                out.push(counts);
            }
        }
        out
    }

    /// sacreBLEU's `_compute_f_score` of `(hyp, ref, match)` counts per order.
    fn f_score(&self, stats: &[[usize; 3]]) -> f64 {
        let eps = 1e-16;
        let factor = self.beta * self.beta;
        let (mut score, mut avg_prec, mut avg_rec, mut order) = (0.0, 0.0, 0.0, 0usize);
        for &[hyp, reference, matched] in stats {
            let prec = if hyp > 0 {
                matched as f64 / hyp as f64
            } else {
                eps
            };
            let rec = if reference > 0 {
                matched as f64 / reference as f64
            } else {
                eps
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                eps
            };
            if hyp > 0 && reference > 0 {
                avg_prec += prec;
                avg_rec += rec;
                order += 1;
            }
        }
        if self.eps_smoothing {
            return 100.0 * score / stats.len() as f64;
        }
        if order == 0 {
            return 0.0;
        }
        let (p, r) = (avg_prec / order as f64, avg_rec / order as f64);
        if p + r == 0.0 {
            return 0.0;
        }
        100.0 * (1.0 + factor) * p * r / (factor * p + r)
    }
}

/// Words for chrF++'s word n-grams: split at spaces, one ASCII punctuation mark split off
/// the end (or else the start) of a longer word.
fn chrf_words(line: &str) -> Vec<&str> {
    let punct = |c: char| c.is_ascii_punctuation();
    let mut out = Vec::new();
    for w in line.split_whitespace() {
        let first = w.chars().next().expect("a word has a character");
        let last = w.chars().next_back().expect("a word has a character");
        if w.chars().count() == 1 {
            out.push(w);
        } else if punct(last) {
            out.extend([
                &w[..w.len() - last.len_utf8()],
                &w[w.len() - last.len_utf8()..],
            ]);
        } else if punct(first) {
            out.extend([&w[..first.len_utf8()], &w[first.len_utf8()..]]);
        } else {
            out.push(w);
        }
    }
    out
}

/// Corpus chrF as sacreBLEU's `corpus_chrf(hypotheses, references, ...)`: for each
/// sentence, the counts against its best-scoring reference, summed over the corpus.
///
/// ```
/// use tessera_transformer::{corpus_chrf, ChrfOptions};
/// let hyp = ["the cat sat on the mat"];
/// let exact = corpus_chrf(&hyp, &[&hyp[..]], &ChrfOptions::default())?;
/// assert!((exact - 100.0).abs() < 1e-9);
/// let refs = ["the cat is on the mat"];
/// let plus = corpus_chrf(&hyp, &[&refs[..]], &ChrfOptions::plus_plus())?;
/// assert!(plus > 0.0 && plus < 100.0);
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
pub fn corpus_chrf<S: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[S],
    references: &[&[R]],
    options: &ChrfOptions,
) -> Result<f64> {
    check_streams("corpus_chrf", hypotheses.len(), references)?;
    let prepare = |line: &str| {
        if options.lowercase {
            line.to_lowercase()
        } else {
            line.to_string()
        }
    };
    let orders = options.char_order + options.word_order;
    let mut totals = vec![[0usize; 3]; orders];
    for (i, h) in hypotheses.iter().enumerate() {
        let hyp = options.ngrams(&prepare(h.as_ref()));
        let mut best: Option<(f64, Vec<[usize; 3]>)> = None;
        for stream in references {
            let reference = options.ngrams(&prepare(stream[i].as_ref()));
            let stats: Vec<[usize; 3]> = hyp
                .iter()
                .zip(&reference)
                .map(|(h, r)| {
                    let (mut hyp_count, mut matched) = (0, 0);
                    for (g, &c) in h {
                        hyp_count += c;
                        matched += c.min(r.get(g).copied().unwrap_or(0));
                    }
                    let ref_count = r.values().sum();
                    [if r.is_empty() { 0 } else { hyp_count }, ref_count, matched]
                })
                .collect();
            let f = options.f_score(&stats);
            if best.as_ref().is_none_or(|(b, _)| f > *b) {
                best = Some((f, stats));
            }
        }
        if let Some((_, stats)) = best {
            for (t, s) in totals.iter_mut().zip(stats) {
                for k in 0..3 {
                    t[k] += s[k];
                }
            }
        }
    }
    Ok(options.f_score(&totals))
}

/// Sentence chrF (sacreBLEU's `sentence_chrf`): [`corpus_chrf`] of one sentence.
pub fn sentence_chrf<R: AsRef<str>>(
    hypothesis: &str,
    references: &[R],
    options: &ChrfOptions,
) -> Result<f64> {
    let streams: Vec<[&str; 1]> = references.iter().map(|r| [r.as_ref()]).collect();
    let streams: Vec<&[&str]> = streams.iter().map(|s| &s[..]).collect();
    corpus_chrf(&[hypothesis], &streams, options)
}
