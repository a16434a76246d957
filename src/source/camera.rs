//! A V4L2 camera (USB document camera, or a camera over a lightbox) as a radiograph source.
//!
//! A capture opens the device (kept open between captures), streams with mmap buffers,
//! drops the first frames while auto-exposure settles, then averages `[camera] frames`
//! frames in grayscale: sensor noise falls with the square root of the count, and noise is
//! what the quality gate and the model dislike most in photographed films.
//!
//! The pixel conversions ([`frame_to_luma`], [`mjpeg_to_luma`]) are pure functions over the
//! driver's buffer, so they are tested without a camera. The device side ([`Camera`]) never
//! panics and never blocks for long: a missing, busy or unplugged camera is an error that
//! says what to do, and [`Camera::probe`] tries again later.

use std::borrow::Cow;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use image::{ImageFormat, Luma};
use v4l::buffer::{Flags as BufferFlags, Type as BufferType};
use v4l::capability::Flags as CapFlags;
use v4l::format::{FourCC, Quantization};
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format};

use super::GrayImage;
use crate::config::{CameraConfig, CameraPixelFormat};

/// Frames dropped after the stream starts: UVC cameras deliver the first one or two while
/// auto-exposure and white balance are still settling (dark or washed-out frames).
pub const WARMUP_FRAMES: u32 = 2;

/// Longest wait for one frame; a dark scene can slow a webcam to a few frames per second.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Corrupt frames tolerated per capture (USB bandwidth hiccups) before giving up.
const MAX_BAD_FRAMES: u32 = 8;

/// mmap buffers requested from the driver.
const BUFFERS: u32 = 4;

// ---------------------------------------------------------------------------------------
// Pure conversions
// ---------------------------------------------------------------------------------------

/// How a raw frame is laid out, as the driver reported it after `VIDIOC_S_FMT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    pub format: CameraPixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per row; 0 means packed rows (drivers report 0 for compressed formats).
    pub stride: u32,
    /// YUYV luma spans 0-255 instead of the usual limited 16-235 (video) range.
    pub full_range: bool,
}

/// Why one frame cannot be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("empty frame (the driver reported 0 bytes used)")]
    Empty,
    #[error("the driver reported {used} bytes used in a {len}-byte buffer")]
    BytesUsed { used: u32, len: usize },
    #[error(
        "row stride of {stride} bytes is less than the {row} bytes a {width}-pixel {format} row needs"
    )]
    Stride { format: &'static str, width: u32, stride: usize, row: usize },
    #[error(
        "short {format} frame: {got} bytes, {need} needed for {width}x{height} \
         (stride {stride}); a USB bandwidth problem or a wrong format"
    )]
    Short { format: &'static str, width: u32, height: u32, stride: usize, got: usize, need: usize },
    #[error("MJPEG frame does not decode: {0}")]
    Jpeg(String),
    #[error("MJPEG frame is {got_width}x{got_height}, but the stream is {width}x{height}")]
    Size { width: u32, height: u32, got_width: u32, got_height: u32 },
}

impl CameraPixelFormat {
    /// The V4L2 four-character code.
    pub fn fourcc(self) -> FourCC {
        FourCC::new(match self {
            CameraPixelFormat::Mjpeg => b"MJPG",
            CameraPixelFormat::Yuyv => b"YUYV",
            CameraPixelFormat::Grey => b"GREY",
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CameraPixelFormat::Mjpeg => "MJPEG",
            CameraPixelFormat::Yuyv => "YUYV",
            CameraPixelFormat::Grey => "GREY",
        }
    }
}

/// One frame as grayscale in `[0, 1]`, row-major, `width * height` values.
///
/// `buffer` is the whole mmap buffer and `bytesused` what the driver says it filled: only
/// that prefix is image data (an MJPEG frame is much smaller than its buffer).
///
/// # Errors
/// [`FrameError`] naming what is wrong: empty, short, inconsistent stride, undecodable.
pub fn frame_to_luma(
    layout: &FrameLayout,
    buffer: &[u8],
    bytesused: u32,
) -> Result<Vec<f32>, FrameError> {
    if bytesused == 0 {
        return Err(FrameError::Empty);
    }
    let data = buffer
        .get(..bytesused as usize)
        .ok_or(FrameError::BytesUsed { used: bytesused, len: buffer.len() })?;
    match layout.format {
        CameraPixelFormat::Grey => raw_luma(layout, data, 1, |v| f32::from(v) / 255.0),
        CameraPixelFormat::Yuyv if layout.full_range => {
            raw_luma(layout, data, 2, |v| f32::from(v) / 255.0)
        }
        // BT.601 video range: black is 16, white 235.
        CameraPixelFormat::Yuyv => {
            raw_luma(layout, data, 2, |v| ((f32::from(v) - 16.0) / 219.0).clamp(0.0, 1.0))
        }
        CameraPixelFormat::Mjpeg => mjpeg_to_luma(data, layout.width, layout.height),
    }
}

/// Luma of an uncompressed frame whose pixel `x` starts at byte `x * bytes_per_px` of its
/// row, luma first: GREY (1 byte) and YUYV (Y0 U Y1 V: every even byte is a luma sample, so
/// odd widths need no special case).
fn raw_luma(
    layout: &FrameLayout,
    data: &[u8],
    bytes_per_px: usize,
    map: impl Fn(u8) -> f32,
) -> Result<Vec<f32>, FrameError> {
    let (w, h) = (layout.width as usize, layout.height as usize);
    let format = layout.format.name();
    let row = w * bytes_per_px;
    let stride = if layout.stride == 0 { row } else { layout.stride as usize };
    if stride < row {
        return Err(FrameError::Stride { format, width: layout.width, stride, row });
    }
    // The last row needs no padding after it.
    let need = if h == 0 { 0 } else { stride * (h - 1) + row };
    if data.len() < need {
        return Err(FrameError::Short {
            format,
            width: layout.width,
            height: layout.height,
            stride,
            got: data.len(),
            need,
        });
    }
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let line = &data[y * stride..y * stride + row];
        out.extend(line.iter().step_by(bytes_per_px).map(|&v| map(v)));
    }
    Ok(out)
}

/// Decodes one MJPEG frame (a JPEG, often without Huffman tables) to grayscale.
///
/// # Errors
/// [`FrameError::Jpeg`] when it does not decode, [`FrameError::Size`] when its size is not
/// the stream's.
pub fn mjpeg_to_luma(data: &[u8], width: u32, height: u32) -> Result<Vec<f32>, FrameError> {
    let jpeg = with_huffman_tables(data)?;
    let img = image::load_from_memory_with_format(&jpeg, ImageFormat::Jpeg)
        .map_err(|e| FrameError::Jpeg(e.to_string()))?;
    if (img.width(), img.height()) != (width, height) {
        return Err(FrameError::Size {
            width,
            height,
            got_width: img.width(),
            got_height: img.height(),
        });
    }
    Ok(super::raster::to_gray(&img).into_raw())
}

/// Many UVC cameras send MJPEG frames without a DHT segment, relying on the standard
/// tables of JPEG Annex K (as the AVI MJPEG format allows); decoders for plain JPEG files
/// reject those. Inserts the standard tables before the scan when the frame has none.
fn with_huffman_tables(data: &[u8]) -> Result<Cow<'_, [u8]>, FrameError> {
    if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
        return Err(FrameError::Jpeg("no JPEG start-of-image marker; not an MJPEG frame".into()));
    }
    let mut pos = 2;
    loop {
        let truncated =
            || FrameError::Jpeg(format!("truncated at byte {pos} before the image data"));
        let (&ff, &marker) =
            (data.get(pos).ok_or_else(truncated)?, data.get(pos + 1).ok_or_else(truncated)?);
        if ff != 0xFF {
            return Err(FrameError::Jpeg(format!("no marker at byte {pos}")));
        }
        match marker {
            0xFF => pos += 1, // fill byte
            0xC4 => return Ok(Cow::Borrowed(data)),
            0xDA => {
                let mut fixed = Vec::with_capacity(data.len() + 420);
                fixed.extend_from_slice(&data[..pos]);
                fixed.extend_from_slice(&standard_dht());
                fixed.extend_from_slice(&data[pos..]);
                return Ok(Cow::Owned(fixed));
            }
            0x01 | 0xD0..=0xD7 => pos += 2, // markers without a length
            _ => {
                let len = data
                    .get(pos + 2..pos + 4)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or_else(truncated)?;
                if len < 2 {
                    return Err(FrameError::Jpeg(format!("bad segment length at byte {pos}")));
                }
                pos += 2 + len;
            }
        }
    }
}

/// The DHT segment with the four standard tables of JPEG Annex K.3 (the same tables the
/// `image` crate's encoder writes; a test checks that).
fn standard_dht() -> Vec<u8> {
    const TABLES: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &LUMA_DC_BITS, &DC_VALUES),
        (0x10, &LUMA_AC_BITS, &LUMA_AC_VALUES),
        (0x01, &CHROMA_DC_BITS, &DC_VALUES),
        (0x11, &CHROMA_AC_BITS, &CHROMA_AC_VALUES),
    ];
    let body: usize = TABLES.iter().map(|(_, _, v)| 17 + v.len()).sum();
    let mut out = vec![0xFF, 0xC4];
    out.extend_from_slice(&((2 + body) as u16).to_be_bytes());
    for (class_id, bits, values) in TABLES {
        out.push(class_id);
        out.extend_from_slice(bits);
        out.extend_from_slice(values);
    }
    out
}

const LUMA_DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const CHROMA_DC_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const LUMA_AC_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
const CHROMA_AC_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const LUMA_AC_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];
#[rustfmt::skip]
const CHROMA_AC_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// The running mean of equally sized grayscale frames.
#[derive(Debug, Clone)]
pub struct Average {
    width: u32,
    height: u32,
    sum: Vec<f32>,
    count: u32,
}

impl Average {
    pub fn new(width: u32, height: u32) -> Average {
        Average { width, height, sum: vec![0.0; width as usize * height as usize], count: 0 }
    }

    /// Frames added so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Adds one frame from [`frame_to_luma`].
    ///
    /// # Errors
    /// [`FrameError::Short`] when `luma` is not `width * height` values.
    pub fn add(&mut self, luma: &[f32]) -> Result<(), FrameError> {
        if luma.len() != self.sum.len() {
            return Err(FrameError::Short {
                format: "grayscale",
                width: self.width,
                height: self.height,
                stride: self.width as usize,
                got: luma.len(),
                need: self.sum.len(),
            });
        }
        self.sum.iter_mut().zip(luma).for_each(|(s, v)| *s += v);
        self.count += 1;
        Ok(())
    }

    /// The mean image, or `None` if no frame was added.
    pub fn finish(self) -> Option<GrayImage> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f32;
        let mean = self.sum.into_iter().map(|s| (s / n).clamp(0.0, 1.0)).collect();
        GrayImage::from_raw(self.width, self.height, mean)
    }
}

/// `image` as a 16-bit grayscale PNG file's bytes: averaging leaves more than 8 bits of
/// precision, and [`super::read_file`] reads 16-bit files back at full precision.
///
/// # Errors
/// The encoder's.
pub fn encode_png(image: &GrayImage) -> Result<Vec<u8>, image::ImageError> {
    let (w, h) = image.dimensions();
    let wide = image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
        Luma([(image.get_pixel(x, y)[0].clamp(0.0, 1.0) * 65535.0).round() as u16])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    wide.write_to(&mut bytes, ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

// ---------------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------------

/// Why the camera gave no image; always names the device.
#[derive(Debug, thiserror::Error)]
#[error("camera {}: {kind}", device.display())]
pub struct CameraError {
    pub device: PathBuf,
    pub kind: CameraErrorKind,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CameraErrorKind {
    #[error("no such device; check the cable and [camera] device")]
    Missing,
    #[error("device busy: another program holds it; close that program (or its service)")]
    Busy,
    #[error("permission denied; add the service user to the `video` group (docs/deploy.md)")]
    Permission,
    #[error(
        "not a video capture device ({0}); a USB camera creates several /dev/video nodes, \
         set [camera] device to the capture one (`v4l2-ctl --list-devices`)"
    )]
    NotCapture(String),
    #[error(
        "the camera does not deliver {requested} (it chose {chosen}; it offers {offered}); \
         set [camera] pixel_format to one it offers"
    )]
    Format { requested: &'static str, chosen: String, offered: String },
    #[error(
        "no frame within {} s; check the cable, the lighting and that no other program \
         streams from it",
        FRAME_TIMEOUT.as_secs()
    )]
    Timeout,
    #[error("{count} corrupt frames in a row, last: {last}; check the cable and USB port")]
    BadFrames { count: u32, last: String },
    /// uvcvideo refuses to start a stream the USB bus cannot carry with ENOSPC, which
    /// reads as "No space left on device": nothing to do with the disk.
    #[error(
        "{op} failed: the USB bus has too little bandwidth for this stream (the driver's \
         ENOSPC, not a full disk); lower [camera] width and height, use pixel_format = \
         \"mjpeg\", or plug the camera into another USB port or hub"
    )]
    UsbBandwidth { op: &'static str },
    #[error("{op} failed: {source}; try again, or replug the camera")]
    Io { op: &'static str, source: io::Error },
    #[error("the V4L2 library failed unexpectedly ({0}); replug the camera")]
    Panicked(String),
}

impl CameraError {
    fn new(device: &Path, kind: CameraErrorKind) -> CameraError {
        CameraError { device: device.to_path_buf(), kind }
    }

    /// Sorts an OS error from `op` by what the user can do about it.
    fn io(device: &Path, op: &'static str, e: io::Error) -> CameraError {
        let kind = match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => CameraErrorKind::Missing,
            Some(libc::EBUSY) => CameraErrorKind::Busy,
            Some(libc::EACCES | libc::EPERM) => CameraErrorKind::Permission,
            Some(libc::ENOTTY) => CameraErrorKind::NotCapture("not a V4L2 device".into()),
            Some(libc::ENOSPC) => CameraErrorKind::UsbBandwidth { op },
            _ if e.kind() == io::ErrorKind::TimedOut => CameraErrorKind::Timeout,
            _ => CameraErrorKind::Io { op, source: e },
        };
        CameraError::new(device, kind)
    }

    /// The health state this failure leaves the camera in.
    pub fn state(&self) -> HealthState {
        match self.kind {
            CameraErrorKind::Missing => HealthState::Missing,
            CameraErrorKind::Busy => HealthState::Busy,
            CameraErrorKind::Permission => HealthState::Denied,
            _ => HealthState::Error,
        }
    }
}

/// Camera health for STATUS and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Not tried yet.
    Unknown,
    /// Open and configured.
    Ok,
    Missing,
    Busy,
    Denied,
    Error,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Ok => "ok",
            HealthState::Missing => "missing",
            HealthState::Busy => "busy",
            HealthState::Denied => "denied",
            HealthState::Error => "error",
        }
    }
}

/// The last known health, with the message to act on when it is not ok.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub state: HealthState,
    pub device: PathBuf,
    /// The last error, or for `Ok` a description of the stream (size, format).
    pub message: String,
}

/// An open, configured device.
struct Open {
    device: Device,
    layout: FrameLayout,
}

/// A configured camera, opened lazily and reopened after failures; shared by every input.
pub struct Camera {
    config: CameraConfig,
    open: Mutex<Option<Open>>,
    health: Mutex<Health>,
}

/// A poisoned lock only means a capture thread panicked; the state stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Camera {
    /// A camera for `config`; nothing is opened until [`Camera::probe`] or [`Camera::grab`].
    pub fn new(config: &CameraConfig) -> Camera {
        Camera {
            config: config.clone(),
            open: Mutex::new(None),
            health: Mutex::new(Health {
                state: HealthState::Unknown,
                device: config.device.clone(),
                message: "not opened yet".into(),
            }),
        }
    }

    pub fn config(&self) -> &CameraConfig {
        &self.config
    }

    pub fn device(&self) -> &Path {
        &self.config.device
    }

    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// Opens the camera if it is closed, or checks that an open one is still attached;
    /// called at start-up and every `[camera] retry_s`. Skipped while a capture runs.
    pub fn probe(&self) -> Health {
        let mut open = match self.open.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return self.health(),
        };
        let result = match open.as_ref() {
            None => self.open_device().map(|o| {
                let msg = describe(&o.layout);
                *open = Some(o);
                msg
            }),
            Some(o) => guarded(self.device(), || {
                o.device
                    .query_caps()
                    .map_err(|e| CameraError::io(self.device(), "query capabilities", e))
            })
            .map(|_| describe(&o.layout)),
        };
        if result.is_err() {
            *open = None;
        }
        self.record(result.as_deref());
        self.health()
    }

    /// Grabs `[camera] frames` frames (after the warm-up frames) and returns their mean.
    ///
    /// # Errors
    /// [`CameraError`] saying what to do; the device is closed and reopened next time.
    pub fn grab(&self) -> Result<GrayImage, CameraError> {
        let mut open = lock(&self.open);
        if open.is_none() {
            match self.open_device() {
                Ok(o) => *open = Some(o),
                Err(e) => {
                    self.record(Err(&e));
                    return Err(e);
                }
            }
        }
        let Some(o) = open.as_ref() else {
            return Err(CameraError::new(self.device(), CameraErrorKind::Missing));
        };
        let result = guarded(self.device(), || self.capture(o));
        match &result {
            Ok(_) => self.record(Ok(&describe(&o.layout))),
            Err(e) => {
                *open = None;
                self.record(Err(e));
            }
        }
        result
    }

    /// Updates the health, logging changes only (a missing camera is retried every few
    /// seconds; the log must not fill with the same line).
    fn record(&self, result: Result<&str, &CameraError>) {
        let (state, message) = match result {
            Ok(desc) => (HealthState::Ok, desc.to_string()),
            Err(e) => (e.state(), e.to_string()),
        };
        let mut h = lock(&self.health);
        let changed = h.state != state || h.message != message;
        h.state = state;
        h.message = message;
        if changed {
            match state {
                HealthState::Ok => log::info!("camera {}: {}", h.device.display(), h.message),
                _ => log::warn!("{}; retrying every {} s", h.message, self.config.retry_s),
            }
        }
    }

    fn open_device(&self) -> Result<Open, CameraError> {
        guarded(self.device(), || open_device(&self.config))
    }

    fn capture(&self, o: &Open) -> Result<GrayImage, CameraError> {
        let path = self.device();
        let mut stream = MmapStream::with_buffers(&o.device, BufferType::VideoCapture, BUFFERS)
            .map_err(|e| CameraError::io(path, "allocating capture buffers", e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        let mut average = Average::new(o.layout.width, o.layout.height);
        let (mut warmup, mut bad) = (0, 0);
        while average.count() < self.config.frames {
            let (buf, meta) = CaptureStream::next(&mut stream)
                .map_err(|e| CameraError::io(path, "reading a frame", e))?;
            if warmup < WARMUP_FRAMES {
                warmup += 1;
                continue;
            }
            let luma = if meta.flags.contains(BufferFlags::ERROR) {
                Err("the driver flagged the frame as corrupt".to_string())
            } else {
                frame_to_luma(&o.layout, buf, meta.bytesused).map_err(|e| e.to_string())
            };
            match luma.and_then(|l| average.add(&l).map_err(|e| e.to_string())) {
                Ok(()) => bad = 0,
                Err(last) => {
                    bad += 1;
                    log::debug!("camera {}: dropped a frame: {last}", path.display());
                    if bad >= MAX_BAD_FRAMES {
                        return Err(CameraError::new(
                            path,
                            CameraErrorKind::BadFrames { count: bad, last },
                        ));
                    }
                }
            }
        }
        average.finish().ok_or_else(|| CameraError::new(path, CameraErrorKind::Timeout))
    }
}

fn describe(l: &FrameLayout) -> String {
    format!("streaming {} {}x{}", l.format.name(), l.width, l.height)
}

/// Runs `f`, turning a panic inside the V4L2 library (it unwraps some driver replies and
/// panics when a stream cannot be stopped) into an error, so a misbehaving camera cannot
/// take down the connection that asked for a capture.
fn guarded<T>(device: &Path, f: impl FnOnce() -> Result<T, CameraError>) -> Result<T, CameraError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(CameraError::new(device, CameraErrorKind::Panicked(why)))
    })
}

fn open_device(config: &CameraConfig) -> Result<Open, CameraError> {
    let path = config.device.as_path();
    let device = Device::with_path(path).map_err(|e| CameraError::io(path, "opening", e))?;
    let caps =
        device.query_caps().map_err(|e| CameraError::io(path, "querying capabilities", e))?;
    let card = format!("{} \"{}\"", caps.driver, caps.card);
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
        return Err(CameraError::new(
            path,
            CameraErrorKind::NotCapture(format!("{card} has no single-planar video capture")),
        ));
    }
    if !caps.capabilities.contains(CapFlags::STREAMING) {
        return Err(CameraError::new(
            path,
            CameraErrorKind::NotCapture(format!("{card} cannot stream")),
        ));
    }
    let fourcc = config.pixel_format.fourcc();
    let wanted = Format::new(config.width, config.height, fourcc);
    let got =
        device.set_format(&wanted).map_err(|e| CameraError::io(path, "setting the format", e))?;
    if got.fourcc != fourcc {
        let offered = match device.enum_formats() {
            Ok(list) if !list.is_empty() => {
                list.iter().map(|d| d.fourcc.to_string()).collect::<Vec<_>>().join(", ")
            }
            _ => "nothing it will list".into(),
        };
        return Err(CameraError::new(
            path,
            CameraErrorKind::Format {
                requested: config.pixel_format.name(),
                chosen: got.fourcc.to_string(),
                offered,
            },
        ));
    }
    if (got.width, got.height) != (config.width, config.height) {
        log::warn!(
            "camera {}: asked for {}x{}, the driver chose {}x{}; using that",
            path.display(),
            config.width,
            config.height,
            got.width,
            got.height
        );
    }
    let layout = FrameLayout {
        format: config.pixel_format,
        width: got.width,
        height: got.height,
        stride: if config.pixel_format == CameraPixelFormat::Mjpeg { 0 } else { got.stride },
        full_range: matches!(got.quantization, Quantization::FullRange),
    };
    log::debug!("camera {path:?}: {card}, {}", describe(&layout));
    Ok(Open { device, layout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(format: CameraPixelFormat, width: u32, height: u32, stride: u32) -> FrameLayout {
        FrameLayout { format, width, height, stride, full_range: false }
    }

    #[test]
    fn grey_with_padding_and_bytesused() {
        // 3x2, stride 4 (one padding byte per row), buffer larger than bytesused.
        let buf = [0, 51, 255, 9, 102, 153, 204, 9, 77, 77];
        let l = layout(CameraPixelFormat::Grey, 3, 2, 4);
        let luma = frame_to_luma(&l, &buf, 7).unwrap();
        let want = [0.0, 0.2, 1.0, 0.4, 0.6, 0.8];
        assert_eq!(luma.len(), 6);
        for (a, b) in luma.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{luma:?}");
        }
        // Packed rows (stride 0).
        let l = layout(CameraPixelFormat::Grey, 2, 2, 0);
        assert_eq!(frame_to_luma(&l, &[0, 255, 255, 0], 4).unwrap(), vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn yuyv_odd_width_limited_and_full_range() {
        // 3 pixels wide: Y0 U Y1 V Y2 U (6 bytes), stride 8; luma 16 = black, 235 = white.
        let row = [16, 128, 235, 128, 125, 128, 0, 0];
        let buf: Vec<u8> = row.iter().chain(row.iter()).copied().collect();
        let l = layout(CameraPixelFormat::Yuyv, 3, 2, 8);
        let luma = frame_to_luma(&l, &buf, 14).unwrap();
        assert_eq!(luma.len(), 6);
        assert_eq!((luma[0], luma[1]), (0.0, 1.0));
        assert!((luma[2] - (125.0 - 16.0) / 219.0).abs() < 1e-6);
        assert_eq!(&luma[..3], &luma[3..]);
        let full = FrameLayout { full_range: true, ..l };
        let luma = frame_to_luma(&full, &buf, 16).unwrap();
        assert!((luma[0] - 16.0 / 255.0).abs() < 1e-6 && (luma[1] - 235.0 / 255.0).abs() < 1e-6);
        // Below 16 and above 235 clamp into [0, 1].
        let l = layout(CameraPixelFormat::Yuyv, 2, 1, 0);
        assert_eq!(frame_to_luma(&l, &[0, 128, 255, 128], 4).unwrap(), vec![0.0, 1.0]);
    }

    #[test]
    fn bad_buffers_name_the_problem() {
        let l = layout(CameraPixelFormat::Yuyv, 4, 4, 8);
        let e = frame_to_luma(&l, &[0; 32], 20).unwrap_err();
        assert_eq!(
            e,
            FrameError::Short { format: "YUYV", width: 4, height: 4, stride: 8, got: 20, need: 32 }
        );
        let msg = e.to_string();
        assert!(msg.contains("short YUYV frame: 20 bytes, 32 needed for 4x4"), "{msg}");
        assert_eq!(frame_to_luma(&l, &[0; 32], 0).unwrap_err(), FrameError::Empty);
        assert_eq!(
            frame_to_luma(&l, &[0; 32], 64).unwrap_err(),
            FrameError::BytesUsed { used: 64, len: 32 }
        );
        let l = layout(CameraPixelFormat::Yuyv, 4, 4, 6);
        let e = frame_to_luma(&l, &[0; 64], 64).unwrap_err();
        assert!(e.to_string().contains("stride of 6 bytes is less than the 8 bytes"), "{e}");
        // The last row needs no padding: stride 8, 3 rows of 6 bytes = 22 bytes is enough.
        let l = layout(CameraPixelFormat::Grey, 6, 3, 8);
        assert_eq!(frame_to_luma(&l, &[0; 22], 22).unwrap().len(), 18);
        assert!(matches!(frame_to_luma(&l, &[0; 21], 21), Err(FrameError::Short { .. })));
    }

    fn jpeg(width: u32, height: u32) -> (Vec<u8>, image::GrayImage) {
        let img =
            image::GrayImage::from_fn(width, height, |x, y| Luma([((x * 7 + y * 3) % 256) as u8]));
        let rgb = image::DynamicImage::ImageLuma8(img.clone()).to_rgb8();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&rgb)
            .unwrap();
        (out, img)
    }

    /// Drops every DHT segment, as cameras that rely on the standard tables do.
    fn strip_dht(data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (mut out, mut tables, mut pos) = (data[..2].to_vec(), Vec::new(), 2);
        loop {
            let marker = data[pos + 1];
            if marker == 0xDA {
                out.extend_from_slice(&data[pos..]);
                return (out, tables);
            }
            let len = usize::from(u16::from_be_bytes([data[pos + 2], data[pos + 3]]));
            let seg = &data[pos..pos + 2 + len];
            if marker == 0xC4 {
                tables.push(seg.to_vec());
            } else {
                out.extend_from_slice(seg);
            }
            pos += 2 + len;
        }
    }

    #[test]
    fn mjpeg_odd_size_decodes_close_to_the_source() {
        let (data, src) = jpeg(37, 21);
        let mut buf = data.clone();
        buf.extend_from_slice(&[0; 100]); // the rest of the mmap buffer
        let l = layout(CameraPixelFormat::Mjpeg, 37, 21, 0);
        let luma = frame_to_luma(&l, &buf, data.len() as u32).unwrap();
        assert_eq!(luma.len(), 37 * 21);
        let err = luma
            .iter()
            .zip(src.pixels())
            .map(|(a, p)| (a - f32::from(p[0]) / 255.0).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.1, "max error {err}");
        let e =
            frame_to_luma(&layout(CameraPixelFormat::Mjpeg, 40, 21, 0), &data, data.len() as u32)
                .unwrap_err();
        assert!(e.to_string().contains("MJPEG frame is 37x21, but the stream is 40x21"), "{e}");
    }

    #[test]
    fn mjpeg_without_huffman_tables_gets_the_standard_ones() {
        let (data, _) = jpeg(64, 48);
        let (stripped, tables) = strip_dht(&data);
        // The image crate writes exactly the Annex K tables (in one or more segments).
        let payload =
            |segs: &[Vec<u8>]| -> Vec<u8> { segs.iter().flat_map(|s| s[4..].to_vec()).collect() };
        assert_eq!(payload(&tables), payload(&[standard_dht()]));
        assert!(image::load_from_memory_with_format(&stripped, ImageFormat::Jpeg).is_err());
        let fixed = mjpeg_to_luma(&stripped, 64, 48).unwrap();
        assert_eq!(fixed, mjpeg_to_luma(&data, 64, 48).unwrap());
    }

    #[test]
    fn broken_mjpeg_is_an_error_not_a_panic() {
        let (data, _) = jpeg(32, 32);
        for bad in [&b""[..], &b"\xFF\xD8"[..], &b"not a jpeg"[..], &data[..40]] {
            assert!(matches!(mjpeg_to_luma(bad, 32, 32), Err(FrameError::Jpeg(_))), "{bad:?}");
        }
        let mut junk = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01];
        junk.extend_from_slice(&[0; 8]);
        assert!(mjpeg_to_luma(&junk, 32, 32).is_err());
        // A frame cut inside the scan may decode (padded) or fail, but never panics.
        for cut in (200..data.len()).step_by(37) {
            let _ = mjpeg_to_luma(&data[..cut], 32, 32);
        }
    }

    #[test]
    fn average_reduces_noise_and_checks_sizes() {
        let mut avg = Average::new(2, 1);
        assert!(avg.clone().finish().is_none());
        avg.add(&[0.2, 1.0]).unwrap();
        avg.add(&[0.4, 0.0]).unwrap();
        assert!(matches!(avg.add(&[0.0; 3]), Err(FrameError::Short { got: 3, need: 2, .. })));
        assert_eq!(avg.count(), 2);
        let img = avg.finish().unwrap();
        assert!((img.get_pixel(0, 0)[0] - 0.3).abs() < 1e-6);
        assert!((img.get_pixel(1, 0)[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn saved_png_reads_back_at_16_bits() {
        let dir = tempfile::tempdir().unwrap();
        let img = GrayImage::from_fn(40, 33, |x, y| Luma([(x + y) as f32 / 80.0]));
        let path = dir.path().join("c.png");
        std::fs::write(&path, encode_png(&img).unwrap()).unwrap();
        let back = crate::source::read_file(&path).unwrap();
        assert_eq!(back.bit_depth, 16);
        assert_eq!(back.pixels.dimensions(), (40, 33));
        assert!((back.pixels.get_pixel(39, 32)[0] - 71.0 / 80.0).abs() < 1e-4);
    }

    fn config(device: &str) -> CameraConfig {
        let mut c = crate::Config::builtin().unwrap().camera;
        c.enabled = true;
        c.device = PathBuf::from(device);
        c
    }

    #[test]
    fn missing_device_says_what_to_do() {
        let cam = Camera::new(&config("/dev/video-does-not-exist"));
        assert_eq!(cam.health().state, HealthState::Unknown);
        let h = cam.probe();
        assert_eq!(h.state, HealthState::Missing, "{h:?}");
        assert!(h.message.contains("check the cable and [camera] device"), "{}", h.message);
        let e = cam.grab().unwrap_err();
        assert!(matches!(e.kind, CameraErrorKind::Missing));
        assert!(
            e.to_string().starts_with("camera /dev/video-does-not-exist: no such device"),
            "{e}"
        );
    }

    #[test]
    fn non_v4l2_device_is_named() {
        // /dev/null opens but answers no V4L2 ioctl.
        let cam = Camera::new(&config("/dev/null"));
        let e = cam.grab().unwrap_err();
        assert!(matches!(e.kind, CameraErrorKind::NotCapture(_)), "{e}");
        assert!(e.to_string().contains("not a V4L2 device"), "{e}");
        assert_eq!(cam.health().state, HealthState::Error);
    }

    #[test]
    fn os_errors_map_to_actions() {
        let p = Path::new("/dev/video0");
        let kind = |errno| CameraError::io(p, "opening", io::Error::from_raw_os_error(errno));
        assert_eq!(kind(libc::EBUSY).state(), HealthState::Busy);
        assert!(kind(libc::EBUSY).to_string().contains("another program holds it"));
        assert_eq!(kind(libc::EACCES).state(), HealthState::Denied);
        assert!(kind(libc::EACCES).to_string().contains("`video` group"));
        assert_eq!(kind(libc::ENODEV).state(), HealthState::Missing);
        assert_eq!(kind(libc::EIO).state(), HealthState::Error);
        assert!(kind(libc::EIO).to_string().contains("opening failed"));
        assert!(kind(libc::ENOSPC).to_string().contains("USB bus has too little bandwidth"));
    }
}
