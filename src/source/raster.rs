//! PNG, JPEG, TIFF and BMP through the `image` crate; 8- and 16-bit, gray or colour.

use std::path::Path;

use image::{DynamicImage, ImageFormat};

use super::{GrayImage, PatientInfo, Radiograph, SourceError, SourceErrorKind, COLOUR_CHROMA};

pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Radiograph, SourceError> {
    let format = image::guess_format(bytes).map_err(|_| {
        let hint = match path.extension().and_then(|e| e.to_str()) {
            Some(ext) => format!(" (the content does not match its .{ext} name)"),
            None => String::new(),
        };
        SourceError::new(path, SourceErrorKind::UnknownFormat(hint))
    })?;
    let name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Bmp => "BMP",
        other => {
            let hint = format!(" (found {other:?})");
            return Err(SourceError::new(path, SourceErrorKind::UnknownFormat(hint)));
        }
    };
    let img = image::load_from_memory_with_format(bytes, format).map_err(|e| {
        SourceError::new(path, SourceErrorKind::Decode { format: name, reason: e.to_string() })
    })?;
    let bit_depth = (img.color().bits_per_pixel() / u16::from(img.color().channel_count())) as u8;
    Ok(Radiograph {
        origin: path.display().to_string(),
        pixels: to_gray(&img),
        bit_depth,
        format: name,
        colour_fraction: colour_fraction(&img),
        patient: PatientInfo::default(),
    })
}

/// Share of pixels with a visible colour (see [`Radiograph::colour_fraction`]); grey
/// formats are 0 without looking.
pub(crate) fn colour_fraction(img: &DynamicImage) -> f64 {
    if !img.color().has_color() {
        return 0.0;
    }
    let rgb = img.to_rgb32f();
    let coloured = rgb
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            r.max(g).max(b) - r.min(g).min(b) > COLOUR_CHROMA
        })
        .count();
    coloured as f64 / (f64::from(img.width()) * f64::from(img.height())).max(1.0)
}

/// Grayscale in `[0, 1]`. Gray images keep their full precision (x / 255 or x / 65535,
/// exactly what the training pipeline did for 8-bit PNGs); colour images use the ITU-R
/// BT.601 luma weights, as PIL's `convert("L")` does.
pub(crate) fn to_gray(img: &DynamicImage) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageLuma8(g) => {
            GrayImage::from_fn(w, h, |x, y| image::Luma([f32::from(g.get_pixel(x, y)[0]) / 255.0]))
        }
        DynamicImage::ImageLuma16(g) => GrayImage::from_fn(w, h, |x, y| {
            image::Luma([f32::from(g.get_pixel(x, y)[0]) / 65535.0])
        }),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => img.to_luma32f(),
        _ => {
            let rgb = img.to_rgb32f();
            GrayImage::from_fn(w, h, |x, y| {
                let p = rgb.get_pixel(x, y).0;
                image::Luma([(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).clamp(0.0, 1.0)])
            })
        }
    }
}
