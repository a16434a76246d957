//! Radiograph -> model input, driven entirely by the model's [`Preprocess`] parameters.
//!
//! Nothing here knows the input size or the normalization constants: they come from the
//! ONNX file's metadata (see docs/model-contract.md), so a retrained model with another
//! recipe needs no code change, and the Rust path cannot drift from the training code.

use image::imageops::{self, FilterType};

use crate::model::{Fit, Preprocess, ResizeFilter};
use crate::source::GrayImage;

/// The model input: `channels * height * width` floats, row-major (NCHW with N = 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub data: Vec<f32>,
    pub shape: [usize; 4],
}

/// Pixels that are not numbers: the model would turn them into a plausible but wrong
/// reading (NaN passes `clamp`, and resizing spreads it), so the image is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{count} of the image's {total} pixels are not numbers (NaN or infinite), as only a damaged or floating-point file can hold - re-export the radiograph as an 8- or 16-bit PNG, TIFF or DICOM")]
pub struct NonFinitePixels {
    pub count: usize,
    pub total: usize,
}

/// Fits the image to the model's input size and normalizes it.
///
/// # Errors
/// [`NonFinitePixels`] when any pixel is NaN or infinite (the decoders refuse the files
/// that could hold them; this is the last line).
pub fn to_input(pixels: &GrayImage, p: &Preprocess) -> Result<Input, NonFinitePixels> {
    let count = pixels.as_raw().iter().filter(|v| !v.is_finite()).count();
    if count > 0 {
        return Err(NonFinitePixels { count, total: pixels.as_raw().len() });
    }
    let (w, h) = (p.width as u32, p.height as u32);
    let fitted;
    let img = if pixels.dimensions() == (w, h) {
        pixels
    } else {
        let filter = match p.resize_filter {
            ResizeFilter::Triangle => FilterType::Triangle,
            ResizeFilter::CatmullRom => FilterType::CatmullRom,
            ResizeFilter::Lanczos3 => FilterType::Lanczos3,
        };
        fitted = match p.fit {
            // The training images were squashed to a square, aspect ratio not kept.
            Fit::Squash => imageops::resize(pixels, w, h, filter),
        };
        &fitted
    };
    let plane = img.as_raw().iter().map(|&v| (v.clamp(0.0, 1.0) - p.mean) / p.std);
    let data: Vec<f32> = match p.channels {
        1 => plane.collect(),
        c => {
            let one: Vec<f32> = plane.collect();
            one.iter().copied().cycle().take(one.len() * c).collect()
        }
    };
    Ok(Input { data, shape: [1, p.channels, p.height, p.width] })
}

/// `input` moved by (dx, dy) pixels with edge pixels replicated (the test-time views of
/// `preprocess.tta_shifts_px`): out\[y]\[x] = in\[clamp(y - dy)]\[clamp(x - dx)], per channel.
pub fn shifted(input: &Input, dx: i32, dy: i32) -> Input {
    let [_, c, h, w] = input.shape;
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let mut data = Vec::with_capacity(input.data.len());
    for ch in 0..c {
        let plane = &input.data[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let sy = clamp(y as i64 - i64::from(dy), h);
            for x in 0..w {
                data.push(plane[sy * w + clamp(x as i64 - i64::from(dx), w)]);
            }
        }
    }
    Input { data, shape: input.shape }
}

/// `input` turned counter-clockwise by `quarter_turns` x 90 degrees (as numpy's `rot90`),
/// for the orientation check; `None` for a quarter or three-quarter turn of a non-square
/// input, whose shape the model would not accept.
pub fn rotated_ccw(input: &Input, quarter_turns: u32) -> Option<Input> {
    let [_, c, h, w] = input.shape;
    let turns = quarter_turns % 4;
    if turns % 2 == 1 && h != w {
        return None;
    }
    let mut data = Vec::with_capacity(input.data.len());
    for ch in 0..c {
        let plane = &input.data[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = match turns {
                    0 => (y, x),
                    1 => (x, w - 1 - y),
                    2 => (h - 1 - y, w - 1 - x),
                    _ => (h - 1 - x, y),
                };
                data.push(plane[sy * w + sx]);
            }
        }
    }
    Some(Input { data, shape: input.shape })
}

/// `input` mirrored left-right (as numpy's `[:, ::-1]` on each plane), for the check
/// that tells a left hand from a right one.
pub fn mirrored(input: &Input) -> Input {
    let [_, c, h, w] = input.shape;
    let mut data = Vec::with_capacity(input.data.len());
    for row in input.data.chunks_exact(w).take(c * h) {
        data.extend(row.iter().rev());
    }
    Input { data, shape: input.shape }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_reverses_each_row() {
        let input = Input { data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], shape: [1, 1, 2, 3] };
        assert_eq!(mirrored(&input).data, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
        assert_eq!(mirrored(&mirrored(&input)).data, input.data);
    }

    #[test]
    fn rotation_follows_numpy_rot90() {
        // [[1, 2], [3, 4]]: rot90 once -> [[2, 4], [1, 3]], twice -> [[4, 3], [2, 1]],
        // three times -> [[3, 1], [4, 2]].
        let input = Input { data: vec![1.0, 2.0, 3.0, 4.0], shape: [1, 1, 2, 2] };
        let turned = |k| rotated_ccw(&input, k).unwrap().data;
        assert_eq!(turned(1), [2.0, 4.0, 1.0, 3.0]);
        assert_eq!(turned(2), [4.0, 3.0, 2.0, 1.0]);
        assert_eq!(turned(3), [3.0, 1.0, 4.0, 2.0]);
        assert_eq!(turned(4), input.data);
        let wide = Input { data: vec![0.0; 6], shape: [1, 1, 2, 3] };
        assert!(rotated_ccw(&wide, 1).is_none() && rotated_ccw(&wide, 2).is_some());
    }

    fn params() -> Preprocess {
        Preprocess {
            width: 4,
            height: 4,
            channels: 1,
            fit: Fit::Squash,
            resize_filter: ResizeFilter::Triangle,
            mean: 0.5,
            std: 0.25,
            tta_shifts_px: Vec::new(),
        }
    }

    #[test]
    fn same_size_is_exact_normalization() {
        let img = GrayImage::from_fn(4, 4, |x, _| image::Luma([x as f32 / 4.0]));
        let input = to_input(&img, &params()).unwrap();
        assert_eq!(input.shape, [1, 1, 4, 4]);
        assert_eq!(&input.data[..4], &[-2.0, -1.0, 0.0, 1.0]);
    }

    #[test]
    fn squash_resizes_any_aspect_to_the_model_size() {
        let img = GrayImage::from_pixel(40, 10, image::Luma([0.75]));
        let input = to_input(&img, &params()).unwrap();
        assert_eq!(input.data.len(), 16);
        assert!(input.data.iter().all(|v| (v - 1.0).abs() < 1e-5));
    }

    #[test]
    fn shifts_replicate_edges() {
        let input = Input { data: (0..6).map(|v| v as f32).collect(), shape: [1, 1, 2, 3] };
        assert_eq!(shifted(&input, 0, 0), input);
        // [[0,1,2],[3,4,5]] moved right by 1: the left column repeats.
        assert_eq!(shifted(&input, 1, 0).data, vec![0., 0., 1., 3., 3., 4.]);
        // moved up by 1: the bottom row repeats.
        assert_eq!(shifted(&input, 0, -1).data, vec![3., 4., 5., 3., 4., 5.]);
        assert_eq!(shifted(&input, -5, 0).data, vec![2., 2., 2., 5., 5., 5.]);
    }

    #[test]
    fn pixels_that_are_not_numbers_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut img = GrayImage::from_pixel(40, 10, image::Luma([0.5]));
            img.put_pixel(3, 2, image::Luma([bad]));
            let e = to_input(&img, &params()).unwrap_err();
            assert_eq!(e, NonFinitePixels { count: 1, total: 400 });
            let msg = e.to_string();
            assert!(msg.contains("not numbers") && msg.contains("re-export"), "{msg}");
            // Already at the model's size (no resampling to spread it): refused all the same.
            let mut img = GrayImage::from_pixel(4, 4, image::Luma([0.5]));
            img.put_pixel(0, 0, image::Luma([bad]));
            assert!(to_input(&img, &params()).is_err(), "{bad}");
        }
    }

    #[test]
    fn channels_are_replicated() {
        let img = GrayImage::from_pixel(4, 4, image::Luma([0.5]));
        let input = to_input(&img, &Preprocess { channels: 3, ..params() }).unwrap();
        assert_eq!(input.shape, [1, 3, 4, 4]);
        assert_eq!(input.data.len(), 48);
    }
}
