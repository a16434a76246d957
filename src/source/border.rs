//! A bright unexposed border at the edges of a radiograph (the collimator's shadow, or
//! white padding) set to background, as a DICOM display shutter would be, so that
//! neither the quality gate nor the model takes it for image content. Left in, the gate
//! read it as an inverted image and the model's likeness check as a foreign one: 100% of
//! validation radiographs with a white border 8% of the side wide were refused, while
//! the model reads them as well as with a dark border (docs/clinical-reading.md).

use super::GrayImage;

/// Narrowest and widest border, as fractions of the side. Thinner bright bands at an edge
/// (1-3 pixels of 100 in about 2% of the validation radiographs, which the model learnt
/// with) are left as they are, so the readings of those images stay those of the model as
/// trained and checked (3 of the 1,164 validation radiographs have a border this wide);
/// wider is not a border but something for the quality gate to judge.
const MIN_FRACTION: f64 = 0.04;
const MAX_FRACTION: f64 = 0.20;
/// A border line averages at least this (over the middle half of the line, so a border
/// on the neighbouring side does not count)...
const BRIGHT_LINE: f64 = 0.8;
/// ...and the lines just inside the border (this fraction of the side, between the
/// borders on the neighbouring sides) average under [`DARK_INSIDE`]: mostly a
/// radiograph's background. An inverted radiograph is bright right up
/// to the hand, so nothing at its edges is taken for a border.
const INSIDE_FRACTION: f64 = 0.05;
const DARK_INSIDE: f64 = 0.45;

/// Lines of the border at each edge, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Border {
    pub top: u32,
    pub bottom: u32,
    pub left: u32,
    pub right: u32,
}

/// Finds a bright unexposed border at any of the four edges; `None` when there is none.
pub fn find(pixels: &GrayImage) -> Option<Border> {
    find_within(pixels, MIN_FRACTION, MAX_FRACTION)
}

/// Finds a bright band narrower than a border ([`find`]): from one line up to
/// [`MIN_FRACTION`] of the side, with a dark background inside it. Not set aside, since
/// the model learnt with such bands, but the quality gate looks past it: a thin white edge
/// is no sign of an inverted image.
pub fn find_thin(pixels: &GrayImage) -> Option<Border> {
    find_within(pixels, 0.0, MIN_FRACTION)
}

/// Bands from `min_fraction` (at least one line) up to, not including, `max_fraction` of
/// the side; none in an image without pixels.
fn find_within(pixels: &GrayImage, min_fraction: f64, max_fraction: f64) -> Option<Border> {
    let (w, h) = pixels.dimensions();
    if w == 0 || h == 0 {
        return None;
    }
    // Along the lines of an edge (top and bottom: the width), and across them.
    let length = |edge: usize| if edge < 2 { w } else { h };
    let side = |edge: usize| if edge < 2 { h } else { w };
    // Mean of line `k`, counted inwards from `edge`, over `span` of its positions.
    let line = |edge: usize, k: u32, span: std::ops::Range<u32>| -> f64 {
        let n = span.len().max(1) as f64;
        let value = |i: u32| {
            let (x, y) = match edge {
                0 => (i, k),
                1 => (i, h - 1 - k),
                2 => (k, i),
                _ => (w - 1 - k, i),
            };
            f64::from(pixels.get_pixel(x, y)[0].clamp(0.0, 1.0))
        };
        span.map(value).sum::<f64>() / n
    };
    let middle = |edge: usize| length(edge) / 4..length(edge) - length(edge) / 4;
    // Bright bands first, judged on the middle half of each line so that a band on a
    // neighbouring side does not count...
    let mut bands = [0u32; 4];
    for (edge, band) in bands.iter_mut().enumerate() {
        let (min, max) = (
            ((f64::from(side(edge)) * min_fraction).round() as u32).max(1),
            ((f64::from(side(edge)) * max_fraction).round() as u32).max(1),
        );
        let lines = (0..max).take_while(|&k| line(edge, k, middle(edge)) >= BRIGHT_LINE).count();
        let lines = lines as u32;
        if lines >= min && lines < max {
            *band = lines;
        }
    }
    // ...then kept where the lines inside are dark, judged between the neighbouring bands
    // (the forearm leaving the bottom edge fills the middle of those lines, not all of it).
    let mut found = [0u32; 4];
    for edge in 0..4 {
        let band = bands[edge];
        if band == 0 {
            continue;
        }
        let inside = ((f64::from(side(edge)) * INSIDE_FRACTION).round() as u32).max(1);
        let (before, after) = if edge < 2 { (bands[2], bands[3]) } else { (bands[0], bands[1]) };
        let span = before..length(edge) - after;
        let dark = (band..band + inside).map(|k| line(edge, k, span.clone())).sum::<f64>()
            / f64::from(inside);
        if dark < DARK_INSIDE {
            found[edge] = band;
        }
    }
    let [top, bottom, left, right] = found;
    (found != [0; 4]).then_some(Border { top, bottom, left, right })
}

/// Finds a bright unexposed border and sets it to background; the border, if any.
pub fn set_aside(pixels: &mut GrayImage) -> Option<Border> {
    let border = find(pixels)?;
    blank(pixels, border);
    Some(border)
}

/// Sets the border's pixels to background (0).
fn blank(pixels: &mut GrayImage, border: Border) {
    let (w, h) = pixels.dimensions();
    for (x, y, p) in pixels.enumerate_pixels_mut() {
        if y < border.top || y >= h - border.bottom || x < border.left || x >= w - border.right {
            p[0] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crude radiograph: dark background, a bright smooth blob in the middle.
    fn blob(w: u32, h: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let dx = (f64::from(x) - f64::from(w) / 2.0) / (f64::from(w) * 0.3);
            let dy = (f64::from(y) - f64::from(h) / 2.0) / (f64::from(h) * 0.33);
            let r = (dx * dx + dy * dy).sqrt();
            image::Luma([(0.1 + 0.6 * (1.0 - r).max(0.0)) as f32])
        })
    }

    fn framed(img: &GrayImage, border: Border, value: f32) -> GrayImage {
        let mut out = img.clone();
        let (w, h) = out.dimensions();
        for (x, y, p) in out.enumerate_pixels_mut() {
            if y < border.top || y >= h - border.bottom || x < border.left || x >= w - border.right
            {
                p[0] = value;
            }
        }
        out
    }

    /// Thin bands (one line up to 4% of the side) are found by [`find_thin`] only, and
    /// borders from 4% by [`find`] only, with no width between them that neither finds.
    #[test]
    fn thin_bands_and_borders_meet() {
        let plain = blob(100, 100);
        assert_eq!(find_thin(&plain), None);
        for lines in 1..8 {
            let band = Border { top: lines, bottom: 0, left: lines, right: 0 };
            let img = framed(&plain, band, 1.0);
            let (thin, wide) = (find_thin(&img), find(&img));
            if lines < 4 {
                assert_eq!((thin, wide), (Some(band), None), "{lines} lines");
            } else {
                assert_eq!((thin, wide), (None, Some(band)), "{lines} lines");
            }
        }
    }

    #[test]
    fn a_white_border_is_found_on_the_sides_it_is_on_and_blanked() {
        let plain = blob(200, 240);
        assert_eq!(find(&plain), None);
        for border in [
            Border { top: 16, bottom: 16, left: 12, right: 12 },
            Border { top: 20, left: 10, ..Border::default() },
            Border { bottom: 10, ..Border::default() },
            Border { right: 39, ..Border::default() },
        ] {
            let mut img = framed(&plain, border, 1.0);
            assert_eq!(find(&img), Some(border));
            blank(&mut img, border);
            assert_eq!(img, framed(&plain, border, 0.0));
        }
        // Wider than a fifth of the side, or thinner than 4% of it: left alone.
        for border in
            [Border { top: 60, ..Border::default() }, Border { left: 7, ..Border::default() }]
        {
            assert_eq!(find(&framed(&plain, border, 1.0)), None);
        }
    }

    /// An image without pixels (a DICOM file with Rows or Columns 0) has no border and
    /// no band, rather than a panic; one line of pixels has none either.
    #[test]
    fn empty_and_one_line_images_have_no_border() {
        for (w, h) in [(0, 0), (0, 100), (100, 0), (1, 100), (100, 1), (1, 1)] {
            let img = GrayImage::from_pixel(w, h, image::Luma([1.0]));
            assert_eq!((find(&img), find_thin(&img)), (None, None), "{w}x{h}");
            let mut img = img;
            assert_eq!(set_aside(&mut img), None, "{w}x{h}");
        }
    }

    #[test]
    fn an_inverted_radiograph_has_no_border() {
        let mut inverted = blob(200, 240);
        inverted.pixels_mut().for_each(|p| p[0] = 1.0 - p[0]);
        assert_eq!(find(&inverted), None);
        let border = Border { top: 16, bottom: 16, left: 12, right: 12 };
        assert_eq!(find(&framed(&inverted, border, 1.0)), None);
    }
}
