//! The PNG backend: each screen becomes a PNG file, replaced atomically.
//!
//! Used on headless units (a web page or a remote viewer shows the file) and by the golden
//! tests. The file is written beside its final name and renamed over it, so a reader never
//! sees a half-written image.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::canvas::Canvas;
use super::{draw, DisplayError, Screen};

/// Renders screens at a fixed size into a PNG file.
#[derive(Debug)]
pub struct PngBackend {
    path: PathBuf,
    canvas: Canvas,
}

impl PngBackend {
    /// A backend writing `width` x `height` screens to `path`. Nothing is written until
    /// the first [`PngBackend::show`].
    pub fn new(path: impl Into<PathBuf>, width: u32, height: u32) -> PngBackend {
        PngBackend { path: path.into(), canvas: Canvas::new(width, height) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last screen drawn, as pixels.
    pub fn canvas(&self) -> &Canvas {
        &self.canvas
    }

    /// Draws `screen` and replaces the PNG file with it.
    ///
    /// # Errors
    /// [`DisplayError::Write`] when the file cannot be written or renamed.
    pub fn show(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        draw::draw_screen(&mut self.canvas, screen).unwrap_or_else(|never| match never {});
        write_png_atomic(&self.path, &self.canvas).map_err(|source| {
            // The old screen must not stand in for this one: a previous patient's result
            // read as the current. Removing a file needs no free space.
            let _ = std::fs::remove_file(&self.path);
            DisplayError::Write { path: self.path.clone(), source }
        })
    }
}

/// Writes `canvas` as an RGB PNG to a temporary file in `path`'s folder, syncs it and
/// renames it over `path`.
fn write_png_atomic(path: &Path, canvas: &Canvas) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut out = BufWriter::new(file);
        PngEncoder::new(&mut out)
            .write_image(
                &canvas.to_rgb_bytes(),
                canvas.width(),
                canvas.height(),
                ExtendedColorType::Rgb8,
            )
            .map_err(std::io::Error::other)?;
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: a stale temporary file is harmless, the next write replaces it.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("screen.png");
        let mut png = PngBackend::new(&path, 64, 48);
        png.show(&Screen::Capturing { source: "camera".into() }).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (64, 48));
        assert_eq!(img.as_raw(), &png.canvas().to_rgb_bytes());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_screen_that_cannot_be_written_removes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("screen.png");
        let mut png = PngBackend::new(&path, 64, 48);
        png.show(&Screen::Capturing { source: "patient A".into() }).unwrap();
        // The temporary file cannot be created (a full disk, here a folder in its way).
        std::fs::create_dir(dir.path().join(".screen.png.tmp")).unwrap();
        assert!(png.show(&Screen::Analysing { source: "patient B".into() }).is_err());
        assert!(!path.exists(), "patient A's screen must not stay up as the current one");
    }

    #[test]
    fn unwritable_path_is_named() {
        let mut png = PngBackend::new("/nonexistent-dir/screen.png", 32, 32);
        let e = png.show(&Screen::Capturing { source: "x".into() }).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/screen.png"), "{e}");
    }
}
