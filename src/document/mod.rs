//! The one-page report (`predict --report FILE.pdf|.png`): what goes on the page, once,
//! and two renderers that only lay it out.
//!
//! Text is kept to printable ASCII so the PDF can use a standard font without embedding
//! one and the PNG can use embedded-graphics' built-in mono fonts.

mod pdf;
mod png;

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};

use crate::atomic_file;
use crate::report::{Age, Reading};
use crate::source::GrayImage;

/// Said on every report, because the program is not a certified medical device.
pub const DISCLAIMER: &str = "Not a certified medical device. Decision support for a qualified \
     clinician. This is not a diagnosis: the bone age is a model estimate and must be reviewed \
     against the radiograph and the clinical picture.";

/// Largest thumbnail side (pixels) on the page.
pub const THUMBNAIL_MAX_PX: u32 = 240;

/// Characters per line before wrapping; fits both renderers' page widths.
const WRAP_CHARS: usize = 64;

/// Everything printed on the page, in reading order.
#[derive(Debug, Clone)]
pub struct Sheet {
    pub title: String,
    /// (label, value) rows; values wrap.
    pub rows: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub disclaimer: String,
    pub footer: String,
    /// 8-bit grayscale, at most [`THUMBNAIL_MAX_PX`] a side.
    pub thumbnail: image::GrayImage,
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot write report {}: {source}; choose a folder this user can write to", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode report {}: {message}", path.display())]
    Encode { path: PathBuf, message: String },
    #[error("report {} must end in .pdf or .png", path.display())]
    Format { path: PathBuf },
}

impl Sheet {
    /// Lays out a reading and its radiograph.
    pub fn from_reading(reading: &Reading, pixels: &GrayImage) -> Sheet {
        let mut rows = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), ascii(&v)));
        row("Patient / exam", reading.id.clone().unwrap_or_else(|| "not given".into()));
        row("Sex", reading.sex.to_string());
        row(
            "Chronological age",
            match reading.chronological_age_months {
                Some(ca) => match reading.age_source {
                    Some(source) => format!("{} ({ca:.1} months), {}", age(ca), source.describe()),
                    None => format!("{} ({ca:.1} months)", age(ca)),
                },
                None => "not given".into(),
            },
        );
        if let Some(date) = &reading.exam_date {
            row("Exam date", date.clone());
        }
        let ba = reading.bone_age_months;
        let mut bone = format!("{} ({ba:.1} months)", age(ba));
        if let Some(hw) = reading.interval95_months {
            bone.push_str(&format!(
                ", 95% interval {:.1} to {:.1} months (+/- {hw:.1})",
                (ba - hw).max(0.0),
                ba + hw
            ));
        }
        row("Bone age", bone);
        if let Some(d) = reading.difference_months {
            row("Bone age - chronological", format!("{d:+.1} months"));
        }
        if let (Some(sd), Some(sds), Some(cat)) = (reading.sd_months, reading.sds, reading.category)
        {
            row("Greulich-Pyle SD", format!("{sd:.2} months at this chronological age"));
            row("SDS", format!("{sds:+.2}: {}", cat.as_str()));
        }
        if let Some(h) = &reading.adult_height {
            row(
                "Predicted adult height",
                format!(
                    "{:.1} cm (Bayley-Pinneau {} table; height {:.1} cm = {:.1}% of mature height)",
                    h.predicted_cm,
                    h.table.as_str(),
                    h.current_cm,
                    h.percent_of_mature_height
                ),
            );
        }
        row("Image", reading.image.clone());
        row("Model", reading.model.clone());
        Sheet {
            title: "Bone age report".into(),
            rows,
            warnings: reading.warnings.iter().map(|w| ascii(w)).collect(),
            disclaimer: DISCLAIMER.into(),
            footer: format!("boneage {}", env!("CARGO_PKG_VERSION")),
            thumbnail: thumbnail(pixels),
        }
    }

    /// The page as plain lines (label: value, wrapped), shared by both renderers.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.rows {
            out.extend(wrap(&format!("{k}: {v}"), WRAP_CHARS));
        }
        if !self.warnings.is_empty() {
            out.push(String::new());
            for w in &self.warnings {
                out.extend(wrap(&format!("Warning: {w}"), WRAP_CHARS));
            }
        }
        out
    }
}

/// Checks, before any analysis, that a report can be written to `path`: a known extension
/// and an existing folder. Catching a typo here saves a reading that would otherwise be
/// printed and then reported as failed.
///
/// # Errors
/// [`DocumentError::Format`] or [`DocumentError::Write`] naming the path.
pub fn check_target(path: &Path) -> Result<(), DocumentError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("pdf" | "png")) {
        return Err(DocumentError::Format { path: path.to_path_buf() });
    }
    if path.is_dir() {
        return Err(DocumentError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a folder"),
        });
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(DocumentError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("folder {} does not exist", dir.display()),
            ),
        });
    }
    // A folder can exist and still refuse the file (permissions, a read-only mount, a full
    // disk): create and remove the very temporary file `write` will use.
    let tmp = atomic_file::temporary_path(path);
    std::fs::File::create(&tmp)
        .and_then(|_| std::fs::remove_file(&tmp))
        .map_err(|source| DocumentError::Write { path: path.to_path_buf(), source })
}

/// Writes the report, choosing PDF or PNG by the file extension.
///
/// # Errors
/// [`DocumentError`] for an unknown extension or a failed write.
pub fn write(path: &Path, sheet: &Sheet) -> Result<(), DocumentError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let bytes = match ext.as_deref() {
        Some("pdf") => pdf::render(sheet),
        Some("png") => png::render(sheet)
            .map_err(|message| DocumentError::Encode { path: path.to_path_buf(), message })?,
        _ => return Err(DocumentError::Format { path: path.to_path_buf() }),
    };
    // Atomically: a failed or interrupted write must not leave half a report under the
    // name a clinician will open, nor destroy an earlier report of that name.
    atomic_file::write(path, &bytes)
        .map_err(|source| DocumentError::Write { path: path.to_path_buf(), source })
}

fn age(months: f64) -> String {
    Age::from_months(months.clamp(0.0, crate::report::MAX_AGE_MONTHS))
        .map(|a| a.to_string())
        .unwrap_or_default()
}

fn thumbnail(pixels: &GrayImage) -> image::GrayImage {
    let (w, h) = pixels.dimensions();
    let scale = f64::from(THUMBNAIL_MAX_PX) / f64::from(w.max(h));
    let (tw, th) = (
        (f64::from(w) * scale).round().max(1.0) as u32,
        (f64::from(h) * scale).round().max(1.0) as u32,
    );
    let small = imageops::resize(pixels, tw, th, FilterType::Triangle);
    image::GrayImage::from_fn(tw, th, |x, y| {
        image::Luma([(small.get_pixel(x, y).0[0].clamp(0.0, 1.0) * 255.0).round() as u8])
    })
}

/// Printable ASCII only: the fonts used have nothing else. Any other character is written
/// as its code point (`<U+00FC>`), not as one shared `?`: two patients `张伟-1` and
/// `李娜-1` must not print the same ID, and the code can be checked against the record.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '±' => "+/-".to_string(),
            '–' | '—' => "-".to_string(),
            c if c == ' ' || c.is_ascii_graphic() => c.to_string(),
            c => format!("<U+{:04X}>", u32::from(c)),
        })
        .collect()
}

/// Greedy word wrap; words longer than a line (paths) are cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let rest = word.split_off(width);
            lines.push(word);
            word = rest;
        }
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::document) fn sheet() -> Sheet {
        use crate::clinical::{assess, Thresholds};
        use crate::report::Sex;
        let age = Age::from_months(124.0).ok();
        let a = assess(Sex::Male, 134.0, Some(124.0), Some(140.0), Thresholds::default());
        let mut r = Reading::new(
            "x.png".into(),
            Sex::Male,
            134.0,
            Some(12.5),
            age,
            (1.0, 228.0),
            "m v1".into(),
        )
        .with_assessment(a);
        r.id = Some("EXAM-7".into());
        let img = GrayImage::from_fn(120, 150, |x, _| image::Luma([x as f32 / 120.0]));
        Sheet::from_reading(&r, &img)
    }

    #[test]
    fn pdf_has_the_numbers_as_text() {
        let bytes = pdf::render(&sheet());
        assert!(bytes.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "EXAM-7",
            "134.0 months",
            "124.0 months",
            "+/- 12.5",
            "SDS: +1.01: normal",
            "Not a certified medical device.",
            "Predicted adult height",
            "Bayley-Pinneau",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        assert!(text.trim_end().ends_with("%%EOF"));
    }

    #[test]
    fn png_is_a_page_with_text_and_thumbnail() {
        let bytes = png::render(&sheet()).unwrap();
        let page = image::load_from_memory(&bytes).unwrap().to_luma8();
        assert!(page.height() > page.width());
        assert!(page.pixels().filter(|p| p.0[0] < 128).count() > 2000);
    }

    #[test]
    fn wraps_words_and_cuts_long_ones() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh x", 3), vec!["abc", "def", "gh", "x"]);
        assert_eq!(ascii("±2 – ok é"), "+/-2 - ok <U+00E9>");
    }

    /// IDs that differ only in characters the fonts lack still print differently.
    #[test]
    fn ids_outside_ascii_stay_distinct() {
        let (a, b) = (ascii("张伟-1"), ascii("李娜-1"));
        assert_eq!(a, "<U+5F20><U+4F1F>-1");
        assert_ne!(a, b);
        assert_eq!(ascii("M\u{fc}ller Jan"), "M<U+00FC>ller Jan");
    }
}
