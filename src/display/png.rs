//! The PNG backend: each screen becomes a PNG file, replaced atomically.
//!
//! Used on headless units (a web page or a remote viewer shows the file) and by the golden
//! tests. The file is written beside its final name and renamed over it, so a reader never
//! sees a half-written image.

use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::canvas::Canvas;
use super::{draw, DisplayError, Screen};
use crate::atomic_file;

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

/// Writes `canvas` as an RGB PNG, replacing `path` atomically.
fn write_png_atomic(path: &Path, canvas: &Canvas) -> std::io::Result<()> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            &canvas.to_rgb_bytes(),
            canvas.width(),
            canvas.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(std::io::Error::other)?;
    atomic_file::write(path, &png)
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
        std::fs::create_dir(atomic_file::temporary_path(&path)).unwrap();
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
