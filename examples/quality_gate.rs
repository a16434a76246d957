//! Measures the quality gate (src/quality.rs): feature ranges on the training radiographs,
//! and how often the gate rejects good and clearly wrong images.
//!
//! ```text
//! cargo run --example quality_gate -- stats   /work/shared/data/rsna-100px/images
//! cargo run --example quality_gate -- measure /work/shared/data/rsna-100px/images [OTHER_IMAGE...]
//! ```
//! `measure` prints the rejection rate on the folder, on synthetic wrong inputs built here
//! (uniform, noise, gradients, checkerboards, text, inverted / saturated / washed-out /
//! stretched training images), on training images given a white border (good inputs)
//! and on any other image files given. Results are recorded in
//! docs/clinical-reading.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use boneage::quality::{self, Features};
use boneage::source::{self, GrayImage};
use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_6X10};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::{Gray8, GrayColor};
use embedded_graphics::prelude::*;
use embedded_graphics::text::Text;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir) = match args.as_slice() {
        [mode, dir, ..] => (mode.as_str(), PathBuf::from(dir)),
        _ => anyhow::bail!("usage: quality_gate stats|measure DIR [OTHER_IMAGE...]"),
    };
    let files = pngs(&dir)?;
    match mode {
        "stats" => stats(&files),
        "measure" => measure(&files, &args[2..]),
        other => anyhow::bail!("unknown mode {other}"),
    }
}

fn pngs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads one feature.
type Getter = fn(&Features) -> f64;

fn stats(files: &[PathBuf]) -> anyhow::Result<()> {
    let feats: Vec<Features> = files
        .iter()
        .filter_map(|p| source::read_file(p).ok())
        .map(|r| quality::measure(&r.pixels))
        .collect();
    println!("{} images", feats.len());
    let cols: [(&str, Getter); 8] = [
        ("mean", |f| f.mean),
        ("std", |f| f.std),
        ("p01", |f| f.p01),
        ("p99", |f| f.p99),
        ("white_fraction", |f| f.white_fraction),
        ("centre_white_fraction", |f| f.centre_white_fraction),
        ("border_minus_center", |f| f.border_minus_center),
        ("roughness", |f| f.roughness),
    ];
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "feature", "min", "p0.05", "p0.5", "p50", "p99.5", "p99.95", "max"
    );
    for (name, get) in cols {
        let mut v: Vec<f64> = feats.iter().map(get).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            q(0.0),
            q(0.0005),
            q(0.005),
            q(0.5),
            q(0.995),
            q(0.9995),
            q(1.0)
        );
    }
    Ok(())
}

/// Counts rejections per reason for one set of images.
#[derive(Default)]
struct Tally {
    n: usize,
    rejected: usize,
    reasons: BTreeMap<String, usize>,
}

impl Tally {
    /// Counts one image from its gate verdict ([`gate`] on synthetic pixels,
    /// [`quality::check_radiograph`] on decoded files, which also looks at colour).
    fn add<T>(&mut self, verdict: Result<T, quality::Rejection>) {
        self.n += 1;
        if let Err(r) = verdict {
            self.rejected += 1;
            let key = format!("{r:?}").split([' ', '{', '(']).next().unwrap_or("?").to_string();
            *self.reasons.entry(key).or_default() += 1;
        }
    }

    fn print(&self, name: &str) {
        let rate = 100.0 * self.rejected as f64 / self.n.max(1) as f64;
        println!(
            "{name:<28} {:>6} images  {:>6} rejected  {rate:6.2}%  {:?}",
            self.n, self.rejected, self.reasons
        );
    }
}

fn measure(files: &[PathBuf], others: &[String]) -> anyhow::Result<()> {
    let mut good = Tally::default();
    let mut examples = Vec::new();
    let mut sample: Vec<GrayImage> = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let Ok(r) = source::read_file(p) else { continue };
        good.add(quality::check_radiograph(&r));
        if let Err(why) = quality::check_radiograph(&r) {
            if examples.len() < 10 {
                examples.push(format!("{}: {why}", p.display()));
            }
        }
        if i % 23 == 0 {
            sample.push(r.pixels);
        }
    }
    good.print("training radiographs");
    for e in &examples {
        println!("  rejected: {e}");
    }

    let mut rng = XorShift(0x9E37_79B9);
    let mut bad: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut good_framed: BTreeMap<String, Tally> = BTreeMap::new();
    let sizes = [(100, 100), (256, 256), (512, 640), (1024, 768)];
    for &(w, h) in &sizes {
        for level in [0.0, 0.02, 0.5, 0.9, 1.0] {
            let img = GrayImage::from_pixel(w, h, image::Luma([level]));
            bad.entry("uniform").or_default().add(gate(&img));
        }
        for _ in 0..5 {
            let lvl = rng.unit() as f32;
            let img = GrayImage::from_fn(w, h, |_, _| {
                image::Luma([(lvl + 0.01 * rng.unit() as f32).min(1.0)])
            });
            bad.entry("uniform + faint noise").or_default().add(gate(&img));
            let img = GrayImage::from_fn(w, h, |_, _| image::Luma([rng.unit() as f32]));
            bad.entry("uniform noise").or_default().add(gate(&img));
            let img = GrayImage::from_fn(w, h, |_, _| {
                let g = (0..4).map(|_| rng.unit()).sum::<f64>() / 4.0;
                image::Luma([g as f32])
            });
            bad.entry("gaussian-like noise").or_default().add(gate(&img));
        }
        for k in 0..4 {
            let img = GrayImage::from_fn(w, h, |x, y| {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let v = match k {
                    0 => fx,
                    1 => 1.0 - fy,
                    2 => (fx + fy) / 2.0,
                    _ => 1.0 - ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt() * 1.4,
                };
                image::Luma([v.clamp(0.0, 1.0)])
            });
            bad.entry("gradients").or_default().add(gate(&img));
        }
        for cell in [2, 5, 10, 25, 64] {
            let img = GrayImage::from_fn(w, h, |x, y| {
                image::Luma([if (x / cell + y / cell) % 2 == 0 { 0.1 } else { 0.9 }])
            });
            bad.entry("checkerboards").or_default().add(gate(&img));
        }
        for (fg, bgc) in [(Gray8::BLACK, 255u8), (Gray8::WHITE, 0u8)] {
            for big in [false, true] {
                bad.entry("text pages").or_default().add(gate(&text_page(w, h, fg, bgc, big)));
            }
        }
        for f in [2.0f32, 7.0, 15.0] {
            let img = GrayImage::from_fn(w, h, |x, y| {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let v = 0.5
                    + 0.25 * (f * fx * std::f32::consts::TAU).sin()
                    + 0.25 * (f * 0.7 * fy * std::f32::consts::TAU + 1.0).cos();
                image::Luma([v])
            });
            bad.entry("sinusoid patterns").or_default().add(gate(&img));
        }
    }
    for img in &sample {
        let inv = GrayImage::from_fn(img.width(), img.height(), |x, y| {
            image::Luma([1.0 - img.get_pixel(x, y).0[0]])
        });
        bad.entry("inverted radiographs").or_default().add(gate(&inv));
        for (gain, name) in [
            (2.0, "overexposed x2 radiographs"),
            (3.0, "overexposed x3 radiographs"),
            (4.0, "overexposed x4 radiographs"),
        ] {
            let sat = GrayImage::from_fn(img.width(), img.height(), |x, y| {
                image::Luma([(img.get_pixel(x, y).0[0] * gain).min(1.0)])
            });
            bad.entry(name).or_default().add(gate(&sat));
        }
        let flat = GrayImage::from_fn(img.width(), img.height(), |x, y| {
            image::Luma([0.45 + 0.1 * img.get_pixel(x, y).0[0]])
        });
        bad.entry("washed-out radiographs").or_default().add(gate(&flat));
        let strip = image::imageops::resize(img, 400, 100, image::imageops::FilterType::Triangle);
        bad.entry("strip (4:1) radiographs").or_default().add(gate(&strip));
        // Good radiographs, not wrong inputs: a white unexposed (collimator) border 2, 4, 8
        // or 16% of the side wide, on all four sides or on two.
        for (percent, all_sides) in [(2, true), (4, true), (8, true), (16, true), (8, false)] {
            let (w, h) = img.dimensions();
            let (bx, by) = (w * percent / 100, h * percent / 100);
            let framed = GrayImage::from_fn(w, h, |x, y| {
                let edge = x < bx || y < by || (all_sides && (x >= w - bx || y >= h - by));
                image::Luma([if edge { 1.0 } else { img.get_pixel(x, y).0[0] }])
            });
            let sides = if all_sides { "4 sides" } else { "top+left" };
            good_framed
                .entry(format!("white border {percent}%, {sides}"))
                .or_default()
                .add(gate(&framed));
        }
    }
    let mut other = Tally::default();
    for p in others {
        match source::read_file(Path::new(p)) {
            Ok(r) => {
                let verdict = quality::check_radiograph(&r);
                println!(
                    "  other {p}: {}",
                    verdict.as_ref().err().map_or("accepted".into(), |e| e.to_string())
                );
                other.add(verdict);
            }
            Err(e) => println!("  other {p}: unreadable ({e})"),
        }
    }
    let (mut n, mut rej) = (0, 0);
    for (name, t) in &bad {
        t.print(name);
        n += t.n;
        rej += t.rejected;
    }
    println!(
        "{:<28} {n:>6} images  {rej:>6} rejected  {:6.2}%",
        "ALL SYNTHETIC WRONG",
        100.0 * rej as f64 / n as f64
    );
    for (name, t) in &good_framed {
        t.print(name);
    }
    if other.n > 0 {
        other.print("other image files");
    }
    Ok(())
}

/// The gate as `predict` runs it on a decoded image: a bright unexposed border is set to
/// background first (done in `source` for files).
fn gate(img: &GrayImage) -> Result<Features, quality::Rejection> {
    let mut img = img.clone();
    source::border::set_aside(&mut img);
    quality::check(&img)
}

/// A page of text, the kind of thing sent by mistake (a scanned form, a screenshot).
fn text_page(w: u32, h: u32, fg: Gray8, bg: u8, big: bool) -> GrayImage {
    struct Canvas(image::GrayImage);
    impl OriginDimensions for Canvas {
        fn size(&self) -> Size {
            Size::new(self.0.width(), self.0.height())
        }
    }
    impl DrawTarget for Canvas {
        type Color = Gray8;
        type Error = std::convert::Infallible;
        fn draw_iter<I: IntoIterator<Item = Pixel<Gray8>>>(
            &mut self,
            it: I,
        ) -> Result<(), Self::Error> {
            for Pixel(p, c) in it {
                if p.x >= 0
                    && p.y >= 0
                    && (p.x as u32) < self.0.width()
                    && (p.y as u32) < self.0.height()
                {
                    self.0.put_pixel(p.x as u32, p.y as u32, image::Luma([c.luma()]));
                }
            }
            Ok(())
        }
    }
    let mut c = Canvas(image::GrayImage::from_pixel(w, h, image::Luma([bg])));
    let (font, step) = if big { (&FONT_10X20, 24) } else { (&FONT_6X10, 12) };
    let style = MonoTextStyle::new(font, fg);
    let mut y = step;
    while y < h as i32 {
        let _ = Text::new(
            "Patient: DOE^JANE  Study 2024-07-01  Hand PA left  kVp 50 mAs 2.0",
            Point::new(4, y),
            style,
        )
        .draw(&mut c);
        y += step;
    }
    GrayImage::from_fn(w, h, |x, y| image::Luma([f32::from(c.0.get_pixel(x, y).0[0]) / 255.0]))
}

struct XorShift(u32);

impl XorShift {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        f64::from(self.0) / f64::from(u32::MAX)
    }
}
