//! Quality gate: refuse images that are unusable or are not a hand radiograph, before a
//! number is reported for them.
//!
//! A network returns a bone age for any input, a photo of a cat included. This gate looks
//! at simple statistics of the image squashed to 100x100 (how the model sees it) and
//! compares them with the ranges measured on the 11,611 training radiographs (RSNA,
//! `examples/quality_gate.rs` measures both). Each rejection says what to check, in words
//! a radiographer can act on. It cannot prove that an image is a hand; it catches blank,
//! saturated, overexposed, inverted, noisy and plainly foreign images. Rates:
//! docs/clinical-reading.md.

use std::fmt;

use image::imageops::{self, FilterType};

use crate::source::{border, GrayImage, Radiograph};

/// Side of the square the statistics are computed on: the training images' size.
pub const QUALITY_SIDE_PX: u32 = 100;
/// Smaller originals hold too little of the hand (training images are 100 px).
pub const MIN_SIDE_PX: u32 = 64;
/// Longer side over shorter side; hand radiographs are about 1.2, a few up to 2.
pub const MAX_ASPECT_RATIO: f64 = 3.0;
/// Width of the frame whose brightness is compared with the centre (pixels of 100).
const BORDER_PX: usize = 10;

/// What the gate measured on one image (all on the 100x100 version, pixels in `[0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Features {
    pub width: u32,
    pub height: u32,
    pub mean: f64,
    pub std: f64,
    /// 1st and 99th percentiles.
    pub p01: f64,
    pub p99: f64,
    /// Fraction of pixels at or above 0.98 (burnt-out white).
    pub white_fraction: f64,
    /// The same fraction in the central half, where the hand lies: an overexposed hand is
    /// burnt out there, while white padding or a frame around a good radiograph is not.
    pub centre_white_fraction: f64,
    /// Mean of the outer frame (inside a thin white edge, if any) minus mean of the central
    /// half: negative on a radiograph (dark background, bright hand), positive on an
    /// inverted one.
    pub border_minus_center: f64,
    /// Mean absolute difference of neighbouring pixels over the standard deviation: about
    /// 1.1 for pixel noise, far lower for anatomy.
    pub roughness: f64,
}

/// Why an image was refused; `Display` is the message shown to the technician.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("{percent:.0}% of the image is in colour; a radiograph is grey - send the radiograph itself, not a photo or screenshot")]
    Colour { percent: f64 },
    #[error("image is only {width}x{height} px; at least {MIN_SIDE_PX} px a side is needed - send the full-resolution radiograph")]
    TooSmall { width: u32, height: u32 },
    #[error("image is {ratio:.1} times longer than it is wide - send the whole hand radiograph, not a strip or a stitched image")]
    AspectRatio { ratio: f64 },
    #[error("image is almost uniform (standard deviation {std:.3}) - check exposure and that the detector was read out")]
    Uniform { std: f64 },
    #[error("{percent:.0}% of the image is burnt-out white - overexposed or wrong window; re-export with the full grey range")]
    Saturated { percent: f64 },
    #[error("{percent:.0}% of the centre of the image, where the hand is, is burnt-out white - overexposed or wrong window; re-export with the full grey range (a plate burnt out at acquisition cannot be read)")]
    Overexposed { percent: f64 },
    #[error(
        "contrast is very low (1st-99th percentile span {span:.3}) - check exposure and windowing"
    )]
    LowContrast { span: f64 },
    #[error("background is brighter than the hand - the image looks inverted, or a bright unexposed border surrounds the hand; re-export with bone bright on a dark background (MONOCHROME2) and no white border (crop it, or send the DICOM with its display shutter)")]
    Inverted,
    #[error("image is dominated by pixel noise (roughness {roughness:.2}) - check the detector, or that this is a radiograph at all")]
    Noise { roughness: f64 },
    #[error("does not look like a hand radiograph: {feature} is {value:.3}, training radiographs range {lo:.3} to {hi:.3} - check that the right image was sent")]
    Unusual { feature: &'static str, value: f64, lo: f64, hi: f64 },
    #[error("the image holds pixels that are not numbers (NaN or infinite), as only a damaged or floating-point file can - re-export the radiograph as an 8- or 16-bit PNG, TIFF or DICOM")]
    NotNumbers,
}

impl Rejection {
    /// What to do about it: the part of the message after its last " - ", for a screen
    /// that has no room for the whole message.
    pub fn remedy(&self) -> String {
        let message = self.to_string();
        message.rsplit_once(" - ").map_or(message.clone(), |(_, remedy)| remedy.to_string())
    }
}

/// Limits set just outside the range of each feature on the training radiographs, measured
/// with `cargo run --example quality_gate -- stats /work/shared/data/rsna-100px/images`
/// (min / max, 0.05th / 99.95th percentiles in docs/clinical-reading.md). The one limit
/// inside the training range is the inversion check: a few training images have a bright
/// frame, and 0.10 keeps their loss under 1% while catching most inverted images.
#[derive(Debug, Clone, Copy)]
struct Range {
    feature: &'static str,
    lo: f64,
    hi: f64,
}

/// Coloured pixels allowed (see [`Radiograph::colour_fraction`]): room for a coloured
/// marker or annotation burnt into a grey radiograph. Photos and screenshots measured
/// 9-47%.
const MAX_COLOUR_FRACTION: f64 = 0.02;
const MIN_STD: f64 = 0.015;
const MAX_WHITE_FRACTION: f64 = 0.40;
/// Burnt-out white allowed in the central half. The training radiographs reach 0.029
/// (their whole-image white fraction reaches 0.216, from white padding around turned
/// scans). Chosen by how the model reads overexposed validation radiographs with the whole
/// gate (docs/clinical-reading.md): 0.15 refuses nearly as many of the badly read ones as
/// 0.08, and half as many of the mildly overexposed ones it still reads well.
const MAX_CENTRE_WHITE_FRACTION: f64 = 0.15;
const MIN_SPAN: f64 = 0.08;
const MAX_BORDER_MINUS_CENTER: f64 = 0.10;
const MAX_ROUGHNESS: f64 = 0.45;
const RANGES: [Range; 5] = [
    Range { feature: "mean brightness", lo: 0.015, hi: 0.65 },
    Range { feature: "standard deviation", lo: 0.015, hi: 0.42 },
    Range { feature: "1st percentile", lo: 0.0, hi: 0.65 },
    Range { feature: "99th percentile", lo: 0.10, hi: 1.0 },
    // Too smooth: gradients, heavily blurred images (training minimum 0.038).
    Range { feature: "fine detail (roughness)", lo: 0.03, hi: MAX_ROUGHNESS },
];

/// Measures the gate's statistics.
pub fn measure(pixels: &GrayImage) -> Features {
    let (width, height) = pixels.dimensions();
    let small;
    let img = if (width, height) == (QUALITY_SIDE_PX, QUALITY_SIDE_PX) {
        pixels
    } else {
        small = imageops::resize(pixels, QUALITY_SIDE_PX, QUALITY_SIDE_PX, FilterType::Triangle);
        &small
    };
    let n = QUALITY_SIDE_PX as usize;
    let v: Vec<f64> = img.as_raw().iter().map(|&x| f64::from(x.clamp(0.0, 1.0))).collect();
    let len = v.len() as f64;
    let mean = v.iter().sum::<f64>() / len;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / len).sqrt();
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let white_fraction = v.iter().filter(|&&x| x >= 0.98).count() as f64 / len;
    let (mut border, mut nb, mut center, mut nc) = (0.0, 0usize, 0.0, 0usize);
    let mut centre_white = 0usize;
    let mut diff = 0.0;
    let mut nd = 0usize;
    // The frame compared with the centre starts inside a thin white edge, if any (a border
    // of 4% or more was set to background before): such an edge is no sign of inversion.
    let thin = border::find_thin(img).unwrap_or_default();
    let [y0, y1, x0, x1] =
        [thin.top, n as u32 - thin.bottom, thin.left, n as u32 - thin.right].map(|b| b as usize);
    let in_frame = |x: usize, y: usize| {
        (x0..x1).contains(&x)
            && (y0..y1).contains(&y)
            && (x < x0 + BORDER_PX
                || x >= x1 - BORDER_PX
                || y < y0 + BORDER_PX
                || y >= y1 - BORDER_PX)
    };
    for y in 0..n {
        for x in 0..n {
            let p = v[y * n + x];
            if in_frame(x, y) {
                border += p;
                nb += 1;
            } else if (n / 4..n - n / 4).contains(&x) && (n / 4..n - n / 4).contains(&y) {
                center += p;
                nc += 1;
                centre_white += usize::from(p >= 0.98);
            }
            if x + 1 < n {
                diff += (p - v[y * n + x + 1]).abs();
                nd += 1;
            }
            if y + 1 < n {
                diff += (p - v[(y + 1) * n + x]).abs();
                nd += 1;
            }
        }
    }
    let border_minus_center = border / nb as f64 - center / nc as f64;
    let roughness = if std > 1e-6 { diff / nd as f64 / std } else { 0.0 };
    Features {
        width,
        height,
        mean,
        std,
        p01: pct(0.01),
        p99: pct(0.99),
        white_fraction,
        centre_white_fraction: centre_white as f64 / nc as f64,
        border_minus_center,
        roughness,
    }
}

/// Runs the gate.
///
/// # Errors
/// The first [`Rejection`] that applies, most specific (and most actionable) first.
pub fn check(pixels: &GrayImage) -> Result<Features, Rejection> {
    // Before measuring: NaN passes `clamp` and every comparison below.
    if pixels.as_raw().iter().any(|v| !v.is_finite()) {
        return Err(Rejection::NotNumbers);
    }
    let f = measure(pixels);
    judge(&f)?;
    Ok(f)
}

/// Runs the gate on a decoded file: its colour first (lost once it is made grey), then
/// [`check`] on the pixels.
///
/// # Errors
/// As [`check`], or [`Rejection::Colour`].
pub fn check_radiograph(radiograph: &Radiograph) -> Result<Features, Rejection> {
    if radiograph.colour_fraction > MAX_COLOUR_FRACTION {
        return Err(Rejection::Colour { percent: radiograph.colour_fraction * 100.0 });
    }
    check(&radiograph.pixels)
}

/// The decision on measured features, split from [`measure`] so it can be unit-tested.
///
/// # Errors
/// As [`check`].
pub fn judge(f: &Features) -> Result<(), Rejection> {
    // Features of an image with pixels that are not numbers are NaN, which every
    // comparison below would let through.
    let measured = [
        f.mean,
        f.std,
        f.p01,
        f.p99,
        f.white_fraction,
        f.centre_white_fraction,
        f.border_minus_center,
        f.roughness,
    ];
    if measured.iter().any(|v| !v.is_finite()) {
        return Err(Rejection::NotNumbers);
    }
    if f.width < MIN_SIDE_PX || f.height < MIN_SIDE_PX {
        return Err(Rejection::TooSmall { width: f.width, height: f.height });
    }
    let ratio = f64::from(f.width.max(f.height)) / f64::from(f.width.min(f.height));
    if ratio > MAX_ASPECT_RATIO {
        return Err(Rejection::AspectRatio { ratio });
    }
    if f.std < MIN_STD {
        return Err(Rejection::Uniform { std: f.std });
    }
    if f.white_fraction > MAX_WHITE_FRACTION {
        return Err(Rejection::Saturated { percent: f.white_fraction * 100.0 });
    }
    if f.p99 - f.p01 < MIN_SPAN {
        return Err(Rejection::LowContrast { span: f.p99 - f.p01 });
    }
    if f.roughness > MAX_ROUGHNESS {
        return Err(Rejection::Noise { roughness: f.roughness });
    }
    if f.border_minus_center > MAX_BORDER_MINUS_CENTER {
        return Err(Rejection::Inverted);
    }
    // After the inversion check: an inverted image is white around the hand, and its own
    // message is the one to act on.
    if f.centre_white_fraction > MAX_CENTRE_WHITE_FRACTION {
        return Err(Rejection::Overexposed { percent: f.centre_white_fraction * 100.0 });
    }
    for (r, value) in RANGES.iter().zip([f.mean, f.std, f.p01, f.p99, f.roughness]) {
        // Written so that NaN is outside the range.
        if !(value >= r.lo && value <= r.hi) {
            return Err(Rejection::Unusual { feature: r.feature, value, lo: r.lo, hi: r.hi });
        }
    }
    Ok(())
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{} mean {:.3} std {:.3} p01 {:.3} p99 {:.3} white {:.3} centre white {:.3} border-center {:+.3} roughness {:.3}",
            self.width,
            self.height,
            self.mean,
            self.std,
            self.p01,
            self.p99,
            self.white_fraction,
            self.centre_white_fraction,
            self.border_minus_center,
            self.roughness
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_says_what_to_do() {
        let all = [
            Rejection::Colour { percent: 30.0 },
            Rejection::TooSmall { width: 10, height: 10 },
            Rejection::AspectRatio { ratio: 4.0 },
            Rejection::Uniform { std: 0.0 },
            Rejection::Saturated { percent: 50.0 },
            Rejection::Overexposed { percent: 30.0 },
            Rejection::LowContrast { span: 0.01 },
            Rejection::Inverted,
            Rejection::Noise { roughness: 0.9 },
            Rejection::Unusual { feature: "mean", value: 0.9, lo: 0.0, hi: 0.6 },
            Rejection::NotNumbers,
        ];
        for r in all {
            let remedy = r.remedy();
            assert!(remedy.len() < r.to_string().len(), "{r}");
            assert!(
                ["send", "check", "overexposed", "the image looks inverted", "re-export"]
                    .iter()
                    .any(|w| remedy.starts_with(w)),
                "{remedy}"
            );
        }
    }

    /// A crude hand-radiograph stand-in: dark background, a bright smooth blob in the middle.
    fn blob() -> GrayImage {
        GrayImage::from_fn(200, 240, |x, y| {
            let dx = (f64::from(x) - 100.0) / 60.0;
            let dy = (f64::from(y) - 120.0) / 80.0;
            let r = (dx * dx + dy * dy).sqrt();
            image::Luma([(0.1 + 0.6 * (1.0 - r).max(0.0)) as f32])
        })
    }

    #[test]
    fn colour_images_are_refused_grey_ones_in_rgb_are_not() {
        let encode = |img: image::RgbImage| {
            let mut png = Vec::new();
            image::DynamicImage::ImageRgb8(img)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            crate::source::read_bytes(std::path::Path::new("x.png"), &png).unwrap()
        };
        let grey = |x: u32, y: u32| (0.1 + 0.6 * (1.0 - blob_r(x, y)).max(0.0)) * 255.0;
        // A grey radiograph stored as RGB, with a small red marker burnt in: accepted.
        let marked = encode(image::RgbImage::from_fn(200, 240, |x, y| {
            let v = grey(x, y) as u8;
            if x < 12 && y < 12 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([v, v, v])
            }
        }));
        assert!(marked.colour_fraction > 0.0 && marked.colour_fraction < 0.01);
        check_radiograph(&marked).unwrap();
        // The same picture tinted (a photo of a film on a light box): refused by colour.
        let tinted = encode(image::RgbImage::from_fn(200, 240, |x, y| {
            let v = grey(x, y);
            image::Rgb([v as u8, (v * 0.8) as u8, (v * 0.5) as u8])
        }));
        let e = check_radiograph(&tinted).unwrap_err();
        assert!(matches!(e, Rejection::Colour { .. }) && e.to_string().contains("grey"), "{e}");
    }

    fn blob_r(x: u32, y: u32) -> f64 {
        let dx = (f64::from(x) - 100.0) / 60.0;
        let dy = (f64::from(y) - 120.0) / 80.0;
        (dx * dx + dy * dy).sqrt()
    }

    #[test]
    fn accepts_a_radiograph_like_image() {
        let f = check(&blob()).unwrap();
        assert!(f.border_minus_center < 0.0, "{f}");
    }

    #[test]
    fn white_padding_around_a_good_radiograph_is_not_overexposure() {
        // A scan turned on the detector leaves white triangles in two corners (as in some
        // training radiographs): much white in the image, none where the hand is.
        let mut padded = blob();
        for (x, y, p) in padded.enumerate_pixels_mut() {
            if x + y < 70 || (199 - x) + (239 - y) < 70 {
                p.0[0] = 1.0;
            }
        }
        let f = check(&padded).unwrap();
        assert!(f.white_fraction > 0.04 && f.centre_white_fraction == 0.0, "{f}");
    }

    /// A white edge of 1-3% of the side (common in the training radiographs, and left in
    /// for the model) is looked past: the frame compared with the centre starts inside it.
    /// An inverted image with such an edge is still refused. At 100 px, the size the gate
    /// measures at, so that the edge is whole lines.
    #[test]
    fn a_thin_white_edge_is_not_taken_for_inversion() {
        let small = imageops::resize(&blob(), 100, 100, FilterType::Triangle);
        let plain = check(&small).unwrap();
        let edged = |img: &GrayImage, lines: u32| {
            let mut out = img.clone();
            for (x, y, p) in out.enumerate_pixels_mut() {
                if x < lines || y < lines || x >= 100 - lines || y >= 100 - lines {
                    p.0[0] = 1.0;
                }
            }
            out
        };
        let mut inverted = small.clone();
        inverted.pixels_mut().for_each(|p| p.0[0] = 1.0 - p.0[0]);
        for lines in 1..4 {
            let f = check(&edged(&small, lines)).unwrap();
            let shift = f.border_minus_center - plain.border_minus_center;
            assert!(shift.abs() < 0.01, "{lines} lines: {f} against {plain}");
            let e = check(&edged(&inverted, lines));
            assert!(matches!(e, Err(Rejection::Inverted)), "{lines} lines: {e:?}");
        }
    }

    /// NaN passes `clamp` and fails every comparison, so a check written `value < lo` would
    /// let it through: pixels and features that are not numbers are refused.
    #[test]
    fn pixels_and_features_that_are_not_numbers_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for side in [100, 200] {
                let mut img = imageops::resize(&blob(), side, side, FilterType::Triangle);
                check(&img).unwrap();
                img.put_pixel(50, 50, image::Luma([bad]));
                let e = check(&img).unwrap_err();
                assert_eq!(e, Rejection::NotNumbers, "{bad} at {side} px");
                assert!(e.remedy().starts_with("re-export"), "{e}");
            }
        }
        let good = measure(&blob());
        judge(&good).unwrap();
        for i in 0..8 {
            let mut f = good;
            let field = [
                &mut f.mean,
                &mut f.std,
                &mut f.p01,
                &mut f.p99,
                &mut f.white_fraction,
                &mut f.centre_white_fraction,
                &mut f.border_minus_center,
                &mut f.roughness,
            ];
            *field.into_iter().nth(i).unwrap() = f64::NAN;
            assert_eq!(judge(&f), Err(Rejection::NotNumbers), "feature {i}");
        }
    }

    #[test]
    fn rejects_with_actionable_reasons() {
        let uniform = GrayImage::from_pixel(200, 200, image::Luma([0.5]));
        let e = check(&uniform).unwrap_err();
        assert!(
            matches!(e, Rejection::Uniform { .. }) && e.to_string().contains("check exposure"),
            "{e}"
        );

        let white =
            GrayImage::from_fn(200, 200, |x, _| image::Luma([if x < 150 { 1.0 } else { 0.2 }]));
        assert!(matches!(check(&white), Err(Rejection::Saturated { .. })), "{:?}", check(&white));

        // A hand overexposed three times: burnt out in the middle, not over the whole image.
        let mut overexposed = blob();
        overexposed.pixels_mut().for_each(|p| p.0[0] = (p.0[0] * 3.0).min(1.0));
        let e = check(&overexposed).unwrap_err();
        assert!(
            matches!(e, Rejection::Overexposed { .. })
                && e.to_string().contains("where the hand is"),
            "{e}"
        );

        let strip = GrayImage::from_fn(800, 100, |x, _| image::Luma([x as f32 / 800.0]));
        assert!(matches!(check(&strip), Err(Rejection::AspectRatio { .. })));

        let small = GrayImage::from_pixel(40, 40, image::Luma([0.5]));
        assert!(matches!(check(&small), Err(Rejection::TooSmall { .. })));

        let mut inverted = blob();
        inverted.pixels_mut().for_each(|p| p.0[0] = 1.0 - p.0[0]);
        assert!(matches!(check(&inverted), Err(Rejection::Inverted)), "{:?}", check(&inverted));

        let mut state = 1u32;
        let noise = GrayImage::from_fn(100, 100, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            image::Luma([(state % 1000) as f32 / 1000.0])
        });
        assert!(matches!(check(&noise), Err(Rejection::Noise { .. })), "{:?}", check(&noise));
    }
}
