//! The Linux framebuffer backend (`/dev/fbN`).
//!
//! Geometry and pixel format come from the `FBIOGET_VSCREENINFO` and `FBIOGET_FSCREENINFO`
//! ioctls at open; the screen is drawn into a [`Canvas`], converted once into the device's
//! format (16, 24 or 32 bits per pixel, channel offsets and lengths as the driver reports
//! them, rows `line_length` bytes apart) and written with one `pwrite` at the visible
//! panning offset. No `mmap`: one write per screen change is cheap and needs no unsafe
//! aliasing of device memory.
//!
//! Not handled: palette (pseudo-colour) and grayscale modes, `msb_right` channels, and a
//! mode or panning change after open (reopen the display). The geometry checks are
//! unit-tested with fake screeninfo values; this code has not run on a real framebuffer here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::RgbColor;

use super::canvas::Canvas;
use super::{draw, DisplayError, Screen};

/// `linux/fb.h` ioctl numbers (no direction/size encoding: these predate it).
const FBIOGET_VSCREENINFO: u32 = 0x4600;
const FBIOGET_FSCREENINFO: u32 = 0x4602;
/// `fb_fix_screeninfo.type`: pixels packed in one plane; the only layout we write.
const FB_TYPE_PACKED_PIXELS: u32 = 0;
/// `fb_fix_screeninfo.visual`: pixel values are colours, not palette indices.
const FB_VISUAL_TRUECOLOR: u32 = 2;

/// `struct fb_bitfield` from `linux/fb.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FbBitfield {
    pub offset: u32,
    pub length: u32,
    pub msb_right: u32,
}

/// `struct fb_var_screeninfo` from `linux/fb.h` (160 bytes on every architecture).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FbVarScreeninfo {
    pub xres: u32,
    pub yres: u32,
    pub xres_virtual: u32,
    pub yres_virtual: u32,
    pub xoffset: u32,
    pub yoffset: u32,
    pub bits_per_pixel: u32,
    pub grayscale: u32,
    pub red: FbBitfield,
    pub green: FbBitfield,
    pub blue: FbBitfield,
    pub transp: FbBitfield,
    pub nonstd: u32,
    pub activate: u32,
    pub height: u32,
    pub width: u32,
    pub accel_flags: u32,
    pub pixclock: u32,
    pub left_margin: u32,
    pub right_margin: u32,
    pub upper_margin: u32,
    pub lower_margin: u32,
    pub hsync_len: u32,
    pub vsync_len: u32,
    pub sync: u32,
    pub vmode: u32,
    pub rotate: u32,
    pub colorspace: u32,
    pub reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` from `linux/fb.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FbFixScreeninfo {
    pub id: [u8; 16],
    pub smem_start: libc::c_ulong,
    pub smem_len: u32,
    pub type_: u32,
    pub type_aux: u32,
    pub visual: u32,
    pub xpanstep: u16,
    pub ypanstep: u16,
    pub ywrapstep: u16,
    pub line_length: u32,
    pub mmio_start: libc::c_ulong,
    pub mmio_len: u32,
    pub accel: u32,
    pub capabilities: u16,
    pub reserved: [u16; 2],
}

/// Where one colour channel sits in a pixel value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Channel {
    offset: u32,
    length: u32,
}

/// The checked facts needed to write pixels: visible size, panning offset, pixel format
/// and row stride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub width: u32,
    pub height: u32,
    xoffset: u32,
    yoffset: u32,
    bytes_per_pixel: u32,
    line_length: u32,
    red: Channel,
    green: Channel,
    blue: Channel,
    transp: Channel,
}

impl Geometry {
    /// Checks what the driver reported.
    ///
    /// # Errors
    /// A sentence saying what is unsupported or inconsistent.
    pub(crate) fn from_screeninfo(
        var: &FbVarScreeninfo,
        fix: &FbFixScreeninfo,
    ) -> Result<Geometry, String> {
        let bpp = var.bits_per_pixel;
        if !matches!(bpp, 16 | 24 | 32) {
            return Err(format!("{bpp} bits per pixel (supported: 16, 24, 32)"));
        }
        if fix.type_ != FB_TYPE_PACKED_PIXELS {
            return Err(format!("pixel layout type {} (supported: packed pixels)", fix.type_));
        }
        if fix.visual != FB_VISUAL_TRUECOLOR {
            return Err(format!("visual {} (supported: truecolor)", fix.visual));
        }
        if var.grayscale != 0 {
            return Err(format!("grayscale/FOURCC mode {} (supported: RGB)", var.grayscale));
        }
        if var.xres == 0 || var.yres == 0 {
            return Err(format!("visible size {}x{}", var.xres, var.yres));
        }
        let bytes_per_pixel = bpp / 8;
        let row_bytes = u64::from(var.xoffset + var.xres) * u64::from(bytes_per_pixel);
        if u64::from(fix.line_length) < row_bytes {
            return Err(format!(
                "line_length {} bytes is shorter than a row of {} pixels at {bpp} bpp",
                fix.line_length,
                var.xoffset + var.xres
            ));
        }
        let end = u64::from(var.yoffset + var.yres) * u64::from(fix.line_length);
        if fix.smem_len != 0 && u64::from(fix.smem_len) < end {
            return Err(format!(
                "framebuffer memory {} bytes is smaller than the visible area ({end} bytes)",
                fix.smem_len
            ));
        }
        let channel = |name: &str, f: &FbBitfield, optional: bool| {
            if f.msb_right != 0 {
                return Err(format!("{name} channel has msb_right set (unsupported)"));
            }
            let max_len = if optional { 8 } else { 8.min(bpp) };
            if (!optional && f.length == 0) || f.length > max_len || f.offset + f.length > bpp {
                return Err(format!(
                    "{name} channel offset {} length {} does not fit {bpp} bpp",
                    f.offset, f.length
                ));
            }
            Ok(Channel { offset: f.offset, length: f.length })
        };
        Ok(Geometry {
            width: var.xres,
            height: var.yres,
            xoffset: var.xoffset,
            yoffset: var.yoffset,
            bytes_per_pixel,
            line_length: fix.line_length,
            red: channel("red", &var.red, false)?,
            green: channel("green", &var.green, false)?,
            blue: channel("blue", &var.blue, false)?,
            transp: channel("transparency", &var.transp, true)?,
        })
    }

    /// The device's pixel value for `color`: each 8-bit channel cut to its top `length`
    /// bits and shifted to its offset; alpha, if present, fully opaque.
    pub(crate) fn pack(&self, color: Rgb888) -> u32 {
        let put = |c: Channel, v: u8| {
            if c.length == 0 {
                0
            } else {
                (u32::from(v) >> (8 - c.length)) << c.offset
            }
        };
        put(self.red, color.r())
            | put(self.green, color.g())
            | put(self.blue, color.b())
            | put(self.transp, u8::MAX)
    }

    /// Byte offset in the device of the first visible row.
    pub(crate) fn write_offset(&self) -> u64 {
        u64::from(self.yoffset) * u64::from(self.line_length)
    }

    /// `canvas` (exactly `width` x `height`) as the bytes of the visible rows, `line_length`
    /// apart, pixels in native byte order as the driver expects; stride padding is zero.
    pub(crate) fn encode(&self, canvas: &Canvas, out: &mut Vec<u8>) {
        let bpp = self.bytes_per_pixel as usize;
        let stride = self.line_length as usize;
        out.clear();
        out.resize(stride * self.height as usize, 0);
        let rows = canvas.pixels().chunks_exact(canvas.width() as usize);
        for (row, pixels) in out.chunks_exact_mut(stride).zip(rows) {
            let start = self.xoffset as usize * bpp;
            let cells = row[start..].chunks_exact_mut(bpp);
            for (cell, &color) in cells.zip(pixels.iter().take(self.width as usize)) {
                let value = self.pack(color);
                if cfg!(target_endian = "little") {
                    cell.copy_from_slice(&value.to_le_bytes()[..bpp]);
                } else {
                    cell.copy_from_slice(&value.to_be_bytes()[4 - bpp..]);
                }
            }
        }
    }
}

/// Draws screens on a Linux framebuffer device.
#[derive(Debug)]
pub struct FramebufferBackend {
    path: PathBuf,
    file: File,
    geometry: Geometry,
    /// Drawn at the panel's size as mounted: turned by `quarter_turns` before writing.
    canvas: Canvas,
    /// Quarter turns clockwise (0 to 3), from `[display] rotate`.
    quarter_turns: u8,
    buffer: Vec<u8>,
}

impl FramebufferBackend {
    /// Opens `path` and reads its geometry; screens are turned `rotate` degrees clockwise
    /// (0, 90, 180 or 270, checked by the config) before they are written.
    ///
    /// # Errors
    /// [`DisplayError::NoDevice`] when the device does not exist, [`DisplayError::Permission`]
    /// when the user may not write it, [`DisplayError::Unsupported`] for a pixel format we
    /// cannot write or a file that is not a framebuffer, [`DisplayError::Device`] otherwise.
    pub fn open(path: &Path, rotate: u16) -> Result<FramebufferBackend, DisplayError> {
        let quarter_turns = ((rotate / 90) % 4) as u8;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        let mut var = FbVarScreeninfo::default();
        let mut fix = FbFixScreeninfo::default();
        read_info(&file, FBIOGET_VSCREENINFO, &mut var)
            .and_then(|()| read_info(&file, FBIOGET_FSCREENINFO, &mut fix))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTTY) | Some(libc::EINVAL) => DisplayError::Unsupported {
                    path: path.to_path_buf(),
                    detail: "not a framebuffer device".into(),
                },
                _ => DisplayError::Device {
                    path: path.to_path_buf(),
                    what: "read the screen geometry",
                    source: e,
                },
            })?;
        let geometry = Geometry::from_screeninfo(&var, &fix)
            .map_err(|detail| DisplayError::Unsupported { path: path.to_path_buf(), detail })?;
        log::info!(
            "framebuffer {}: {}x{}, {} bpp, stride {} bytes",
            path.display(),
            geometry.width,
            geometry.height,
            var.bits_per_pixel,
            fix.line_length
        );
        // Screens are drawn upright, at the panel's size as mounted, then turned.
        let canvas = if quarter_turns % 2 == 1 {
            Canvas::new(geometry.height, geometry.width)
        } else {
            Canvas::new(geometry.width, geometry.height)
        };
        Ok(FramebufferBackend {
            path: path.to_path_buf(),
            file,
            geometry,
            canvas,
            quarter_turns,
            buffer: Vec::new(),
        })
    }

    /// Visible size in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.geometry.width, self.geometry.height)
    }

    /// Draws `screen` and writes it to the device in one write.
    ///
    /// # Errors
    /// [`DisplayError::Device`] when the write fails.
    pub fn show(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        draw::draw_screen(&mut self.canvas, screen).unwrap_or_else(|never| match never {});
        if self.quarter_turns == 0 {
            self.geometry.encode(&self.canvas, &mut self.buffer);
        } else {
            self.geometry.encode(&self.canvas.rotated(self.quarter_turns), &mut self.buffer);
        }
        self.file.write_all_at(&self.buffer, self.geometry.write_offset()).map_err(|source| {
            DisplayError::Device { path: self.path.clone(), what: "write the screen", source }
        })
    }
}

fn open_error(path: &Path, e: io::Error) -> DisplayError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        // ENODEV/ENXIO: the node exists but no driver is behind it.
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            DisplayError::NoDevice { path }
        }
        Some(libc::EACCES) | Some(libc::EPERM) => DisplayError::Permission { path },
        _ => DisplayError::Device { path, what: "open", source: e },
    }
}

/// One `FBIOGET_*SCREENINFO` ioctl into `info`.
fn read_info<T>(file: &File, request: u32, info: &mut T) -> io::Result<()> {
    // SAFETY: `request` is one of the two FBIOGET_*SCREENINFO ioctls, and `info` is the
    // `#[repr(C)]` struct that ioctl fills (layout per linux/fb.h, size checked in tests),
    // exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, info as *mut T) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::prelude::*;

    fn bits(offset: u32, length: u32) -> FbBitfield {
        FbBitfield { offset, length, msb_right: 0 }
    }

    /// A fake mode as a driver would report it.
    fn mode(
        xres: u32,
        yres: u32,
        bpp: u32,
        rgba: [(u32, u32); 4],
        line_length: u32,
    ) -> (FbVarScreeninfo, FbFixScreeninfo) {
        let var = FbVarScreeninfo {
            xres,
            yres,
            xres_virtual: xres,
            yres_virtual: yres,
            bits_per_pixel: bpp,
            red: bits(rgba[0].0, rgba[0].1),
            green: bits(rgba[1].0, rgba[1].1),
            blue: bits(rgba[2].0, rgba[2].1),
            transp: bits(rgba[3].0, rgba[3].1),
            ..Default::default()
        };
        let fix = FbFixScreeninfo {
            line_length,
            visual: FB_VISUAL_TRUECOLOR,
            smem_len: line_length * yres,
            ..Default::default()
        };
        (var, fix)
    }

    const RGB565: [(u32, u32); 4] = [(11, 5), (5, 6), (0, 5), (0, 0)];
    const XRGB8888: [(u32, u32); 4] = [(16, 8), (8, 8), (0, 8), (24, 8)];
    const BGR888: [(u32, u32); 4] = [(0, 8), (8, 8), (16, 8), (0, 0)];

    fn geometry(v: &(FbVarScreeninfo, FbFixScreeninfo)) -> Geometry {
        Geometry::from_screeninfo(&v.0, &v.1).unwrap()
    }

    #[test]
    fn struct_layout_matches_linux_fb_h() {
        assert_eq!(std::mem::size_of::<FbVarScreeninfo>(), 160);
        let fix = if cfg!(target_pointer_width = "64") { 80 } else { 68 };
        assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), fix);
    }

    #[test]
    fn packs_rgb565() {
        let g = geometry(&mode(4, 2, 16, RGB565, 8));
        assert_eq!(g.pack(Rgb888::RED), 0xF800);
        assert_eq!(g.pack(Rgb888::GREEN), 0x07E0);
        assert_eq!(g.pack(Rgb888::BLUE), 0x001F);
        assert_eq!(g.pack(Rgb888::WHITE), 0xFFFF);
        assert_eq!(g.pack(Rgb888::new(0x12, 0x34, 0x56)), (2 << 11) | (13 << 5) | 10);
    }

    #[test]
    fn packs_32_and_24_bpp_with_driver_offsets() {
        let g = geometry(&mode(4, 2, 32, XRGB8888, 16));
        assert_eq!(g.pack(Rgb888::new(1, 2, 3)), 0xFF01_0203);
        let g = geometry(&mode(4, 2, 24, BGR888, 12));
        assert_eq!(g.pack(Rgb888::new(1, 2, 3)), 0x0003_0201);
    }

    #[test]
    fn encode_honours_stride_and_byte_order() {
        // 3x2 at 16 bpp with rows padded to 8 bytes (2 bytes of padding).
        let g = geometry(&mode(3, 2, 16, RGB565, 8));
        let mut canvas = Canvas::new(3, 2);
        canvas.draw_iter([Pixel(Point::new(2, 1), Rgb888::RED)]).unwrap();
        let mut out = Vec::new();
        g.encode(&canvas, &mut out);
        assert_eq!(out.len(), 16);
        let px = 8 + 2 * 2;
        assert_eq!(u16::from_ne_bytes([out[px], out[px + 1]]), 0xF800);
        out[px..px + 2].fill(0);
        assert!(out.iter().all(|&b| b == 0), "only the red pixel is set: {out:?}");

        // 24 bpp, little endian as on every board we ship: B, G, R in memory.
        let g = geometry(&mode(2, 1, 24, [(16, 8), (8, 8), (0, 8), (0, 0)], 8));
        let mut canvas = Canvas::new(2, 1);
        canvas.draw_iter([Pixel(Point::new(1, 0), Rgb888::new(1, 2, 3))]).unwrap();
        g.encode(&canvas, &mut out);
        if cfg!(target_endian = "little") {
            assert_eq!(out, [0, 0, 0, 3, 2, 1, 0, 0]);
        }
    }

    #[test]
    fn encode_honours_panning_offsets() {
        let (mut var, mut fix) = mode(2, 2, 32, XRGB8888, 16);
        var.xoffset = 1;
        var.yoffset = 3;
        var.yres_virtual = 6;
        fix.line_length = 12;
        fix.smem_len = 12 * 6;
        let g = Geometry::from_screeninfo(&var, &fix).unwrap();
        assert_eq!(g.write_offset(), 36);
        let mut canvas = Canvas::new(2, 2);
        canvas.draw_iter([Pixel(Point::new(0, 0), Rgb888::WHITE)]).unwrap();
        let mut out = Vec::new();
        g.encode(&canvas, &mut out);
        assert_eq!(out.len(), 24);
        assert_eq!(&out[4..8], &0xFFFF_FFFFu32.to_ne_bytes());
        assert_eq!(&out[..4], &[0; 4]);
    }

    #[test]
    fn rejects_what_we_cannot_write() {
        let check = |v: &(FbVarScreeninfo, FbFixScreeninfo), want: &str| {
            let e = Geometry::from_screeninfo(&v.0, &v.1).unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        check(&mode(4, 2, 8, RGB565, 4), "8 bits per pixel");
        check(&mode(4, 2, 16, RGB565, 6), "line_length 6");
        check(&mode(4, 2, 16, [(12, 5), (5, 6), (0, 5), (0, 0)], 8), "red channel");
        check(&mode(4, 2, 16, [(11, 5), (5, 0), (0, 5), (0, 0)], 8), "green channel");
        let mut v = mode(4, 2, 16, RGB565, 8);
        v.1.visual = 3;
        check(&v, "visual 3");
        let mut v = mode(4, 2, 16, RGB565, 8);
        v.1.smem_len = 8;
        check(&v, "smaller than the visible area");
    }

    #[test]
    fn missing_device_says_what_to_do() {
        let e = FramebufferBackend::open(Path::new("/dev/fb-does-not-exist"), 0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/dev/fb-does-not-exist: no such device"), "{msg}");
        assert!(msg.contains("[display]") && msg.contains("backend = \"png\""), "{msg}");
    }

    #[test]
    fn a_file_that_is_not_a_framebuffer_is_refused() {
        let e = FramebufferBackend::open(Path::new("/dev/null"), 0).unwrap_err();
        assert!(e.to_string().contains("not a framebuffer"), "{e}");
    }
}
