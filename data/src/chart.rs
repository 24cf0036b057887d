//! Line and scatter charts drawn into an RGB image and written as PNG: axes with
//! ticks, labels, a legend. Text is drawn with the public-domain 8×8 bitmap font of
//! `font8x8`, so no system font is needed.
//!
//! ```
//! use tessera_data::{Chart, Series, Style};
//! let chart = Chart {
//!     title: "loss".into(),
//!     series: vec![Series { name: "train".into(), points: vec![(0.0, 2.0), (1.0, 1.0)], style: Style::Line }],
//!     ..Chart::default()
//! };
//! let canvas = chart.render(400, 300);
//! assert_eq!(canvas.image()?.shape(), &[3, 300, 400]);
//! # Ok::<(), tessera_data::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use font8x8::UnicodeFonts;
use tessera_tensor::Tensor;

use crate::{Error, Result};

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Points joined by lines.
    Line,
    /// Separate dots.
    Points,
}

/// One named set of `(x, y)` points.
#[derive(Clone, Debug)]
pub struct Series {
    /// The name in the legend.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Lines or dots.
    pub style: Style,
}

/// A chart: title, axis labels, series; `log_x`/`log_y` use base-10 logarithmic axes.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// What is drawn, each in its colour.
    pub series: Vec<Series>,
    /// A base-10 logarithmic x axis.
    pub log_x: bool,
    /// A base-10 logarithmic y axis.
    pub log_y: bool,
}

const PALETTE: [[f32; 3]; 8] = [
    [0.12, 0.47, 0.71],
    [1.00, 0.50, 0.05],
    [0.17, 0.63, 0.17],
    [0.84, 0.15, 0.16],
    [0.58, 0.40, 0.74],
    [0.55, 0.34, 0.29],
    [0.89, 0.47, 0.76],
    [0.50, 0.50, 0.50],
];

/// The colour bar of a colour-coded picture ([`Canvas::framed`]): the colour map and
/// the labels at its low end, in its middle and at its high end.
#[derive(Clone, Copy, Debug)]
pub struct ColorBar<'a> {
    /// The colour of each value in `[0, 1]`, such as [`viridis`](crate::viridis).
    pub map: fn(f32) -> [f32; 3],
    /// The label at 0.
    pub low: &'a str,
    /// What the colours stand for.
    pub name: &'a str,
    /// The label at 1.
    pub high: &'a str,
}

/// An RGB canvas with f32 channels in `[0, 1]`.
#[derive(Clone, Debug)]
pub struct Canvas {
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// Channel-major pixels `[3, h, w]`.
    pub px: Vec<f32>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![1.0; 3 * w * h],
        }
    }

    /// Colours the pixel `(x, y)`; outside the canvas nothing happens.
    pub fn set(&mut self, x: i64, y: i64, c: [f32; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let (x, y) = (x as usize, y as usize);
            for (ch, v) in c.iter().enumerate() {
                self.px[(ch * self.h + y) * self.w + x] = *v;
            }
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [f32; 3], width: i64) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            for dx in 0..width {
                for dy in 0..width {
                    self.set(
                        x.round() as i64 + dx - width / 2,
                        y.round() as i64 + dy - width / 2,
                        c,
                    );
                }
            }
        }
    }

    fn dot(&mut self, (x, y): (f64, f64), c: [f32; 3]) {
        for dx in -3i64..=3 {
            for dy in -3i64..=3 {
                if dx * dx + dy * dy <= 9 {
                    self.set(x.round() as i64 + dx, y.round() as i64 + dy, c);
                }
            }
        }
    }

    /// The x axis's grid lines at `ticks` (pixel position, label), their labels under
    /// `bottom`, and the two axes of the box `(left, right, top, bottom)`.
    fn frame(
        &mut self,
        ticks: impl Iterator<Item = (f64, String)>,
        (left, right, top, bottom): (f64, f64, f64, f64),
    ) {
        let black = [0.0; 3];
        for (x, s) in ticks {
            self.line((x, top), (x, bottom), [0.85; 3], 1);
            self.text(
                &s,
                x as i64 - 4 * s.len() as i64,
                bottom as i64 + 6,
                black,
                false,
            );
        }
        self.line((left, bottom), (right, bottom), black, 1);
        self.line((left, top), (left, bottom), black, 1);
    }

    /// Text with its top-left corner at `(x, y)`; `vertical` turns it 90° anticlockwise.
    pub fn text(&mut self, s: &str, x: i64, y: i64, c: [f32; 3], vertical: bool) {
        for (k, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::LATIN_FONTS.get(ch))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        let (gx, gy) = (k as i64 * 8 + col, row as i64);
                        if vertical {
                            self.set(x + gy, y - gx, c);
                        } else {
                            self.set(x + gx, y + gy, c);
                        }
                    }
                }
            }
        }
    }

    /// The canvas as an image tensor `[3, h, w]`.
    pub fn image(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.px.clone(), &[3, self.h, self.w])?)
    }

    /// Writes the canvas as a PNG (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::save_png(path, &self.image()?)
    }

    /// `image` (`[3, H, W]` in `[0, 1]`) centred on a white canvas, with `title` above
    /// it, `note` below and, for a colour-coded picture, a colour `bar` between the two.
    /// The canvas is as wide as the image or the longer text, with a margin of 10 pixels.
    ///
    /// ```
    /// use tessera_data::{viridis, Canvas, ColorBar};
    /// use tessera_tensor::Tensor;
    /// let picture = Tensor::zeros(&[3, 20, 64]); // wider than the text (8 pixels a letter)
    /// let bar = ColorBar { map: viridis, low: "0", name: "weight", high: "1" };
    /// let canvas = Canvas::framed(&picture, "Title", "a note", Some(&bar))?;
    /// assert_eq!(canvas.w, 64 + 2 * 10);
    /// assert_eq!(canvas.h, 28 + 20 + 8 + 36 + 18);
    /// # Ok::<(), tessera_data::Error>(())
    /// ```
    pub fn framed(
        image: &Tensor,
        title: &str,
        note: &str,
        bar: Option<&ColorBar<'_>>,
    ) -> Result<Canvas> {
        let &[3, h, w] = image.shape() else {
            return Err(Error::Invalid {
                what: "Canvas::framed",
                msg: format!("expected a picture [3, H, W], got {:?}", image.shape()),
            });
        };
        let (margin, top) = (10, 28);
        let text_w = 8 * title.chars().count().max(note.chars().count());
        let bar_h = if bar.is_some() { 36 } else { 0 };
        let width = w.max(text_w) + 2 * margin;
        let mut canvas = Canvas::new(width, top + h + 8 + bar_h + 18);
        let black = [0.0; 3];
        canvas.text(title, margin as i64, 10, black, false);
        let px = crate::data_of(image);
        let x0 = (width - w) / 2;
        for y in 0..h {
            for x in 0..w {
                let rgb = [0, 1, 2].map(|ch| px[(ch * h + y) * w + x]);
                canvas.set((x0 + x) as i64, (top + y) as i64, rgb);
            }
        }
        let mut y = top + h + 8;
        if let Some(bar) = bar {
            let bar_w = w.min(256);
            let bx = (width - bar_w) / 2;
            for x in 0..bar_w {
                let c = (bar.map)(x as f32 / (bar_w - 1).max(1) as f32);
                for dy in 0..12 {
                    canvas.set((bx + x) as i64, (y + dy) as i64, c);
                }
            }
            let ty = (y + 16) as i64;
            let high_x = bx + bar_w - 8 * bar.high.chars().count();
            canvas.text(bar.low, bx as i64, ty, black, false);
            canvas.text(bar.high, high_x as i64, ty, black, false);
            let name_x = width / 2 - 4 * bar.name.chars().count();
            canvas.text(bar.name, name_x as i64, ty, black, false);
            y += bar_h;
        }
        canvas.text(note, margin as i64, y as i64, [0.3; 3], false);
        Ok(canvas)
    }

    /// Copies `other` into this canvas with its top-left corner at row `y0` (rows that
    /// do not fit are dropped; `other` must be as wide).
    pub fn paste_rows(&mut self, other: &Canvas, y0: usize) {
        let rows = other.h.min(self.h.saturating_sub(y0));
        let w = self.w.min(other.w);
        for ch in 0..3 {
            for y in 0..rows {
                let dst = (ch * self.h + y0 + y) * self.w;
                let src = (ch * other.h + y) * other.w;
                self.px[dst..dst + w].copy_from_slice(&other.px[src..src + w]);
            }
        }
    }
}

/// The range of `values` widened by `pad` of its width on each side: `[0, 1]` when
/// there are none, one unit wide around a single value.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * pad;
    (lo - pad, hi + pad)
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    }
}

impl Chart {
    /// Draws the chart on a `w × h` canvas.
    pub fn render(&self, w: usize, h: usize) -> Canvas {
        let mut cv = Canvas::new(w, h);
        let black = [0.0, 0.0, 0.0];
        let grey = [0.85, 0.85, 0.85];
        let (left, right, top, bottom) = (80.0, w as f64 - 20.0, 40.0, h as f64 - 50.0);
        let tx = |v: f64, log: bool| if log { v.max(1e-300).log10() } else { v };
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (tx(x, self.log_x), tx(y, self.log_y)))
            .collect();
        let (x0, x1) = span(pts.iter().map(|p| p.0), 0.0);
        let (y0, y1) = span(pts.iter().map(|p| p.1), 0.05);
        let px = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
        let py = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);
        // Grid, ticks and their labels.
        for t in ticks(y0, y1) {
            cv.line((left, py(t)), (right, py(t)), grey, 1);
            let s = label(if self.log_y { 10f64.powf(t) } else { t });
            cv.text(
                &s,
                left as i64 - 8 * s.len() as i64 - 6,
                py(t) as i64 - 4,
                black,
                false,
            );
        }
        let x_ticks = ticks(x0, x1).into_iter().map(|t| {
            let v = if self.log_x { 10f64.powf(t) } else { t };
            (px(t), label(v))
        });
        cv.frame(x_ticks, (left, right, top, bottom));
        cv.text(
            &self.title,
            (w as i64 - 8 * self.title.len() as i64) / 2,
            14,
            black,
            false,
        );
        cv.text(
            &self.x_label,
            ((left + right) / 2.0) as i64 - 4 * self.x_label.len() as i64,
            h as i64 - 22,
            black,
            false,
        );
        cv.text(
            &self.y_label,
            8,
            ((top + bottom) / 2.0) as i64 + 4 * self.y_label.len() as i64,
            black,
            true,
        );
        for (k, s) in self.series.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (px(tx(x, self.log_x)), py(tx(y, self.log_y))))
                .collect();
            match s.style {
                Style::Line => {
                    for w2 in p.windows(2) {
                        cv.line(w2[0], w2[1], c, 2);
                    }
                    if p.len() == 1 {
                        cv.dot(p[0], c);
                    }
                }
                Style::Points => p.iter().for_each(|&q| cv.dot(q, c)),
            }
            // Legend, top right, aligned on the longest name.
            let longest = self
                .series
                .iter()
                .map(|s| s.name.chars().count())
                .max()
                .unwrap_or(0);
            let ly = top as i64 + 8 + 16 * k as i64;
            let lx = right as i64 - 8 * longest as i64 - 30;
            cv.line(
                (lx as f64, ly as f64 + 4.0),
                (lx as f64 + 18.0, ly as f64 + 4.0),
                c,
                3,
            );
            cv.text(&s.name, lx + 24, ly, black, false);
        }
        cv
    }

    /// Renders at 800×500 and writes a PNG (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.render(800, 500).save(path)
    }
}

/// One measurement of a [`DotPlot`]: a value per run of each row.
#[derive(Clone, Debug, Default)]
pub struct DotPanel {
    /// Under the axis: what is measured (`"BLEU (dev)"`).
    pub x_label: String,
    /// Row `i`'s runs; an empty row is left blank.
    pub values: Vec<Vec<f64>>,
    /// A value to compare every row with (the base model's), drawn as a vertical line.
    pub reference: Option<f64>,
}

/// Rows of named settings against a few measurements, side by side: for each row and
/// measurement, a dot per run and a bar at their mean, with the reference as a line.
///
/// ```
/// use tessera_data::{DotPanel, DotPlot};
/// let plot = DotPlot {
///     title: "two rows".into(),
///     rows: vec!["base".into(), "A1".into()],
///     panels: vec![DotPanel {
///         x_label: "BLEU".into(),
///         values: vec![vec![30.0, 31.0], vec![27.5]],
///         reference: Some(30.5),
///     }],
/// };
/// let picture = plot.render();
/// assert_eq!(picture.w, 1000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DotPlot {
    /// Above the plot.
    pub title: String,
    /// The row names, top to bottom.
    pub rows: Vec<String>,
    /// The measurements, left to right.
    pub panels: Vec<DotPanel>,
}

impl DotPlot {
    /// Draws the plot, 1,000 pixels wide and 24 pixels per row.
    pub fn render(&self) -> Canvas {
        let (w, row_h, top, names) = (1000usize, 24.0, 50.0, 90.0);
        let h = (top + row_h * self.rows.len().max(1) as f64 + 60.0) as usize;
        let mut cv = Canvas::new(w, h);
        let (black, red) = ([0.0; 3], PALETTE[3]);
        cv.text(&self.title, 10, 14, black, false);
        let bottom = top + row_h * self.rows.len() as f64;
        for (i, name) in self.rows.iter().enumerate() {
            let y = top + row_h * (i as f64 + 0.5);
            cv.text(name, 10, y as i64 - 4, black, false);
        }
        let panels = self.panels.len().max(1) as f64;
        let width = (w as f64 - names - 20.0) / panels;
        for (k, p) in self.panels.iter().enumerate() {
            let (left, right) = (
                names + width * k as f64 + 20.0,
                names + width * (k + 1) as f64 - 10.0,
            );
            let all = p.values.iter().flatten().chain(&p.reference).copied();
            let (lo, hi) = span(all.filter(|v| v.is_finite()), 0.08);
            let px = |v: f64| left + (v - lo) / (hi - lo) * (right - left);
            for i in 0..=self.rows.len() {
                let y = top + row_h * i as f64;
                cv.line((left, y), (right, y), [0.93; 3], 1);
            }
            let x_ticks = ticks(lo, hi).into_iter().map(|t| (px(t), label(t)));
            cv.frame(x_ticks, (left, right, top, bottom));
            if let Some(r) = p.reference.filter(|r| r.is_finite()) {
                cv.line((px(r), top), (px(r), bottom), red, 1);
            }
            for (i, runs) in p.values.iter().enumerate() {
                let y = top + row_h * (i as f64 + 0.5);
                let runs: Vec<f64> = runs.iter().copied().filter(|v| v.is_finite()).collect();
                if !runs.is_empty() {
                    let mean = runs.iter().sum::<f64>() / runs.len() as f64;
                    cv.line((px(mean), y - 8.0), (px(mean), y + 8.0), black, 2);
                }
                for &v in &runs {
                    cv.dot((px(v), y), PALETTE[0]);
                }
            }
            let x = ((left + right) / 2.0) as i64 - 4 * p.x_label.chars().count() as i64;
            cv.text(&p.x_label, x, h as i64 - 26, black, false);
        }
        cv
    }

    /// Renders the plot and writes a PNG (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.render().save(path)
    }
}

/// The loss and accuracy curves of a training run as one 800-pixel-wide picture: the
/// columns `train_loss`, `val_loss` and `test_loss` on top and, where any row has them,
/// `train_acc`, `val_acc` and `test_acc` below, each against the column `x` (`step`,
/// `epoch`). `rows` are the logged records, column name → value; a record lacks the
/// columns it did not measure.
///
/// ```
/// use std::collections::HashMap;
/// let rows: Vec<HashMap<String, f64>> = (0..5)
///     .map(|s| HashMap::from([("step".into(), s as f64), ("train_loss".into(), 2.0 / (s + 1) as f64)]))
///     .collect();
/// let picture = tessera_data::metrics_picture(&rows, "step")?;
/// assert_eq!((picture.w, picture.h), (800, 500));
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn metrics_picture(rows: &[HashMap<String, f64>], x: &str) -> Result<Canvas> {
    let charts = [
        ("loss", ["train_loss", "val_loss", "test_loss"]),
        ("accuracy", ["train_acc", "val_acc", "test_acc"]),
    ]
    .map(|(title, keys)| Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: title.into(),
        series: keys
            .iter()
            .map(|&key| Series {
                name: key.to_string(),
                points: rows
                    .iter()
                    .filter_map(|r| Some((*r.get(x)?, *r.get(key)?)))
                    .collect(),
                style: Style::Line,
            })
            .filter(|s| !s.points.is_empty())
            .collect(),
        ..Chart::default()
    });
    let charts: Vec<&Chart> = charts.iter().filter(|c| !c.series.is_empty()).collect();
    if charts.is_empty() {
        return Err(Error::Invalid {
            what: "metrics_picture",
            msg: format!(
                "no loss or accuracy values against {x:?} in {} rows",
                rows.len()
            ),
        });
    }
    let (w, h) = (800, 500);
    let mut canvas = Canvas::new(w, h * charts.len());
    for (i, chart) in charts.iter().enumerate() {
        canvas.paste_rows(&chart.render(w, h), i * h);
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viridis;

    #[test]
    fn a_framed_picture_sits_centred_between_its_title_and_its_bar() {
        let pixel =
            |cv: &Canvas, x: usize, y: usize| [0, 1, 2].map(|ch| cv.px[(ch * cv.h + y) * cv.w + x]);
        // A red 4x2 picture under a title of 10 characters (80 pixels of text).
        let mut red = vec![0.0; 3 * 2 * 4];
        red[..8].fill(1.0);
        let red = Tensor::from_vec(red, &[3, 2, 4]).unwrap();
        let bar = ColorBar {
            map: viridis,
            low: "0",
            name: "v",
            high: "1",
        };
        let cv = Canvas::framed(&red, "ten chars!", "", Some(&bar)).unwrap();
        assert_eq!((cv.w, cv.h), (80 + 20, 28 + 2 + 8 + 36 + 18));
        let x0 = (cv.w - 4) / 2;
        assert_eq!(pixel(&cv, x0, 28), [1.0, 0.0, 0.0]);
        assert_eq!(pixel(&cv, x0 + 3, 29), [1.0, 0.0, 0.0]);
        assert_eq!(pixel(&cv, x0 - 1, 28), [1.0; 3]);
        assert_eq!(pixel(&cv, x0 + 4, 28), [1.0; 3]);
        // The bar is as wide as the picture, from the map's low end to its high end.
        let y = 28 + 2 + 8;
        assert_eq!(pixel(&cv, x0, y), viridis(0.0));
        assert_eq!(pixel(&cv, x0 + 3, y + 11), viridis(1.0));
        let flat = Tensor::zeros(&[2, 2]);
        let err = Canvas::framed(&flat, "", "", None).unwrap_err().to_string();
        assert!(err.contains("[3, H, W]") && err.contains("[2, 2]"), "{err}");
    }

    #[test]
    fn metrics_stack_loss_over_accuracy_and_need_a_curve() {
        let row = |s: f64, extra: &str| {
            HashMap::from([
                ("step".to_string(), s),
                (extra.to_string(), 1.0 / (s + 1.0)),
            ])
        };
        let losses: Vec<_> = (0..4).map(|s| row(s as f64, "val_loss")).collect();
        assert_eq!(metrics_picture(&losses, "step").unwrap().h, 500);
        let mut both = losses.clone();
        both.extend((0..4).map(|s| row(s as f64, "test_acc")));
        assert_eq!(metrics_picture(&both, "step").unwrap().h, 1000);
        let err = metrics_picture(&losses, "epoch").unwrap_err().to_string();
        assert!(
            err.contains("no loss or accuracy values against \"epoch\""),
            "{err}"
        );
    }

    #[test]
    fn a_dot_plot_draws_each_run_and_the_reference() {
        let plot = |values: Vec<Vec<f64>>, reference| DotPlot {
            title: "t".into(),
            rows: vec!["a".into(), "b".into()],
            panels: vec![DotPanel {
                x_label: "x".into(),
                values,
                reference,
            }],
        };
        let count = |cv: &Canvas, c: [f32; 3]| {
            (0..cv.w * cv.h)
                .filter(|&i| (0..3).all(|ch| (cv.px[ch * cv.w * cv.h + i] - c[ch]).abs() < 1e-6))
                .count()
        };
        let one = plot(vec![vec![1.0], vec![2.0]], None).render();
        let three = plot(vec![vec![1.0, 1.5], vec![2.0]], None).render();
        // A dot is 29 pixels of the first colour (radius 3).
        assert_eq!(count(&one, PALETTE[0]), 2 * 29);
        assert_eq!(count(&three, PALETTE[0]), 3 * 29);
        let red = PALETTE[3];
        assert_eq!(count(&one, red), 0);
        assert!(count(&plot(vec![vec![1.0], vec![2.0]], Some(1.5)).render(), red) >= 48);
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0);
        assert_eq!(t.len(), 6);
        for (a, b) in t.iter().zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let t = ticks(3.0, 97.0);
        assert_eq!(t.first(), Some(&20.0));
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 20.0).abs() < 1e-9));
    }

    #[test]
    fn a_series_is_drawn_in_its_colour() {
        let chart = Chart {
            title: "t".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                style: Style::Line,
            }],
            ..Chart::default()
        };
        let cv = chart.render(200, 150);
        let blue = (0..cv.w * cv.h)
            .filter(|&i| {
                (cv.px[i] - PALETTE[0][0]).abs() < 1e-6
                    && (cv.px[2 * cv.w * cv.h + i] - PALETTE[0][2]).abs() < 1e-6
            })
            .count();
        assert!(blue > 100, "{blue} pixels of the series colour");
    }
}
