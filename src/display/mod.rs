//! The kiosk display: what to show ([`Screen`]) and where ([`Display`]).
//!
//! A [`Screen`] is plain data: the caller builds one on every state change and calls
//! [`Display::show`], which redraws the whole screen. Drawing is generic over any
//! `embedded-graphics` target with `Rgb888` colours and lays itself out from the target's
//! size, so the same screens serve a 320x240 and an 800x480 panel. Backends draw into an
//! in-memory [`Canvas`] and convert once: [`PngBackend`] writes a PNG file (headless units,
//! tests), [`FramebufferBackend`] a Linux `/dev/fbN`.
//!
//! The result screen takes a [`ResultView`], not a `report::Reading`: the display needs
//! only what it shows, and the reading may change without the screens noticing.

mod canvas;
mod draw;
mod fbdev;
mod png;
mod text;

use std::path::PathBuf;

use crate::config::{DisplayBackend, DisplayConfig};
use crate::report::Sex;
use crate::source::GrayImage;

pub use canvas::Canvas;
pub use draw::draw_screen;
pub use fbdev::FramebufferBackend;
pub use png::PngBackend;

/// What the kiosk shows.
#[derive(Debug, Clone)]
pub enum Screen {
    /// Idle, waiting for work.
    Ready {
        device_name: String,
        model_version: String,
        /// Network and serial summary, one line each (e.g. `tcp 0.0.0.0:7878`).
        status_lines: Vec<String>,
    },
    /// Acquiring a radiograph from `source` (a file, a folder, a serial link...).
    Capturing { source: String },
    /// Running the model on a radiograph from `source`.
    Analysing { source: String },
    /// The estimate, boxed: it carries the thumbnail and is much larger than the others.
    Result(Box<ResultView>),
    /// Something failed: `what` went wrong and the `action` the user should take.
    Error { what: String, action: String },
}

/// Everything the result screen shows; the caller maps its reading into this.
#[derive(Debug, Clone)]
pub struct ResultView {
    pub bone_age_months: f64,
    pub sex: Sex,
    /// Half-width of the 95% interval (months).
    pub interval95_months: Option<f64>,
    pub chronological_age_months: Option<f64>,
    /// Bone age minus chronological age (months); positive = advanced.
    pub difference_months: Option<f64>,
    /// A short judgement of the difference, e.g. `within the normal range`.
    pub category: Option<String>,
    /// Bayley-Pinneau predicted adult height (cm), when the height was given.
    pub adult_height_cm: Option<f64>,
    pub patient_id: Option<String>,
    pub exam_id: Option<String>,
    /// The radiograph, grayscale in `[0, 1]`, any size: it is scaled to fit.
    pub thumbnail: Option<GrayImage>,
    pub warnings: Vec<String>,
}

/// Why the display could not be opened or updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DisplayError {
    #[error(
        "{}: no such device; set [display] device to the panel's framebuffer \
         or use backend = \"png\" (or \"none\")",
        path.display()
    )]
    NoDevice { path: PathBuf },
    #[error(
        "{}: permission denied; run as a member of the `video` group or add a udev rule \
         (see docs/display.md)",
        path.display()
    )]
    Permission { path: PathBuf },
    #[error("{}: unsupported framebuffer: {detail}", path.display())]
    Unsupported { path: PathBuf, detail: String },
    #[error("{}: cannot {what}: {source}", path.display())]
    Device { path: PathBuf, what: &'static str, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot replace or remove {}: {source}; it may still show the previous screen - \
         make its folder and the file writable, or set [display] png_path in a writable folder",
        path.display()
    )]
    Stale { path: PathBuf, source: std::io::Error },
}

/// The configured display.
#[derive(Debug)]
pub enum Display {
    /// No display: every screen is dropped (`backend = "none"`).
    None,
    Png(PngBackend),
    Framebuffer(FramebufferBackend),
}

impl Display {
    /// Opens the backend `config` names.
    ///
    /// # Errors
    /// [`DisplayError`] when the framebuffer cannot be opened or is unsupported. The PNG
    /// backend writes nothing until the first screen, so its errors come from `show`.
    pub fn open(config: &DisplayConfig) -> Result<Display, DisplayError> {
        Ok(match config.backend {
            DisplayBackend::None => Display::None,
            DisplayBackend::Png => {
                Display::Png(PngBackend::new(&config.png_path, config.width, config.height))
            }
            DisplayBackend::Framebuffer => {
                Display::Framebuffer(FramebufferBackend::open(&config.device, config.rotate)?)
            }
        })
    }

    /// Redraws the whole display with `screen`.
    ///
    /// # Errors
    /// [`DisplayError`] when the backend cannot write the screen.
    pub fn show(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        match self {
            Display::None => Ok(()),
            Display::Png(png) => png.show(screen),
            Display::Framebuffer(fb) => fb.show(screen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use std::path::Path;

    #[test]
    fn default_config_opens_no_display() {
        let c = Config::builtin().unwrap();
        let mut d = Display::open(&c.display).unwrap();
        assert!(matches!(d, Display::None));
        d.show(&Screen::Capturing { source: "x".into() }).unwrap();
    }

    #[test]
    fn framebuffer_config_with_missing_device_is_no_device() {
        let text = "[display]\nbackend = \"framebuffer\"\ndevice = \"/dev/fb-missing\"\n";
        let c = Config::parse(text, Path::new("x.toml")).unwrap();
        let e = Display::open(&c.display).unwrap_err();
        assert!(matches!(e, DisplayError::NoDevice { .. }), "{e}");
    }
}
