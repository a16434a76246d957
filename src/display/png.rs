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
    /// The in-place fallback is logged once, not at every screen.
    warned_in_place: bool,
}

impl PngBackend {
    /// A backend writing `width` x `height` screens to `path`. Nothing is written until
    /// the first [`PngBackend::show`].
    pub fn new(path: impl Into<PathBuf>, width: u32, height: u32) -> PngBackend {
        PngBackend { path: path.into(), canvas: Canvas::new(width, height), warned_in_place: false }
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
    /// [`DisplayError::Write`] when the file cannot be replaced (it is then removed), or
    /// [`DisplayError::Stale`] when it can be neither replaced nor removed.
    pub fn show(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        draw::draw_screen(&mut self.canvas, screen).unwrap_or_else(|never| match never {});
        let png = match encode_png(&self.canvas) {
            Ok(png) => png,
            Err(source) => return self.fall_back(None, source),
        };
        match atomic_file::write(&self.path, &png) {
            Ok(()) => Ok(()),
            Err(source) => self.fall_back(Some(&png), source),
        }
    }

    /// After a failed replace, the old screen must not stand in for this one: a previous
    /// patient's result read as the current.
    fn fall_back(
        &mut self,
        png: Option<&[u8]>,
        source: std::io::Error,
    ) -> Result<(), DisplayError> {
        // The file the replace aimed at: where a link leads, as in `atomic_file::write`.
        let target = atomic_file::target(&self.path);
        // A path that names no file (a folder) never held a screen to go stale.
        if source.kind() == std::io::ErrorKind::InvalidInput || target.is_dir() {
            return Err(DisplayError::Write { path: self.path.clone(), source });
        }
        // Removing a file needs no free space (a full disk).
        let removed = std::fs::remove_file(&target)
            .map_or_else(|e| e.kind() == std::io::ErrorKind::NotFound, |()| true);
        if removed {
            return Err(DisplayError::Write { path: self.path.clone(), source });
        }
        // A folder that lets no file be created, renamed or removed (its permissions, an
        // append-only attribute) may still let this one be rewritten in place. A viewer
        // may then catch it half-written, which is better than a stale result.
        let Some(png) = png else {
            return Err(DisplayError::Stale { path: self.path.clone(), source });
        };
        if let Err(e) = std::fs::write(&target, png) {
            log::warn!("{}: rewriting the screen in place failed too: {e}", target.display());
            return Err(DisplayError::Stale { path: self.path.clone(), source });
        }
        if !self.warned_in_place {
            log::warn!(
                "{}: its folder refuses the atomic replace ({source}), so screens are rewritten \
                 in place and a viewer may catch one half-written; make the folder writable",
                target.display()
            );
            self.warned_in_place = true;
        }
        Ok(())
    }
}

/// The canvas as an RGB PNG.
fn encode_png(canvas: &Canvas) -> std::io::Result<Vec<u8>> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            &canvas.to_rgb_bytes(),
            canvas.width(),
            canvas.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(std::io::Error::other)?;
    Ok(png)
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

    /// Sets or clears a file attribute with `chattr`; false where the file system or the
    /// user cannot (not ext2/3/4 or XFS, or not root).
    fn chattr(flag: &str, path: &Path) -> bool {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(path)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Clears the attributes again, even when an assertion fails, so the folder can go.
    struct Attrs(Vec<(&'static str, PathBuf)>);
    impl Drop for Attrs {
        fn drop(&mut self) {
            for (flag, path) in &self.0 {
                chattr(flag, path);
            }
        }
    }

    #[test]
    fn a_folder_that_refuses_the_replace_gets_the_screen_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("screen.png");
        let mut png = PngBackend::new(&path, 64, 48);
        png.show(&Screen::Capturing { source: "patient A".into() }).unwrap();
        // Append-only: files can be created and written, not renamed or removed; it holds
        // for root too, for whom permission bits do not.
        if !chattr("+a", dir.path()) {
            eprintln!("skipped: chattr +a is not available here");
            return;
        }
        let mut attrs = Attrs(vec![("-a", dir.path().to_path_buf())]);
        png.show(&Screen::Analysing { source: "patient B".into() }).unwrap();
        let shown = image::open(&path).unwrap().to_rgb8();
        assert_eq!(shown.as_raw(), &png.canvas().to_rgb_bytes(), "patient B's screen");

        // The file itself immutable too: nothing can change it, and the error says so.
        assert!(chattr("+i", &path));
        attrs.0.insert(0, ("-i", path.clone()));
        let e = png.show(&Screen::Capturing { source: "patient C".into() }).unwrap_err();
        assert!(matches!(e, DisplayError::Stale { .. }), "{e}");
        assert!(e.to_string().contains("may still show the previous screen"), "{e}");
        drop(attrs);
    }

    #[test]
    fn through_a_link_the_screen_it_leads_to_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let link = dir.path().join("screen.png");
        std::os::unix::fs::symlink("shared/screen.png", &link).unwrap();
        let mut png = PngBackend::new(&link, 64, 48);
        png.show(&Screen::Capturing { source: "patient A".into() }).unwrap();
        if !chattr("+a", &shared) {
            eprintln!("skipped: chattr +a is not available here");
            return;
        }
        let _attrs = Attrs(vec![("-a", shared.clone())]);
        png.show(&Screen::Analysing { source: "patient B".into() }).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        let shown = image::open(shared.join("screen.png")).unwrap().to_rgb8();
        assert_eq!(shown.as_raw(), &png.canvas().to_rgb_bytes(), "patient B's screen");
    }

    #[test]
    fn through_a_link_a_screen_that_cannot_be_written_removes_the_one_it_leads_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        let link = dir.path().join("screen.png");
        std::os::unix::fs::symlink("shared/screen.png", &link).unwrap();
        let mut png = PngBackend::new(&link, 64, 48);
        png.show(&Screen::Capturing { source: "patient A".into() }).unwrap();
        std::fs::create_dir(atomic_file::temporary_path(&link)).unwrap();
        assert!(png.show(&Screen::Analysing { source: "patient B".into() }).is_err());
        assert!(!dir.path().join("shared/screen.png").exists(), "patient A's screen is gone");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_folder_as_the_screen_path_is_a_plain_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut png = PngBackend::new(dir.path(), 32, 32);
        let e = png.show(&Screen::Capturing { source: "x".into() }).unwrap_err();
        assert!(matches!(e, DisplayError::Write { .. }), "{e}");
    }

    #[test]
    fn unwritable_path_is_named() {
        let mut png = PngBackend::new("/nonexistent-dir/screen.png", 32, 32);
        let e = png.show(&Screen::Capturing { source: "x".into() }).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/screen.png"), "{e}");
    }
}
