//! Settings from `firmware-config/*.toml`, checked completely at start-up.
//!
//! The built-in defaults are `firmware-config/default.toml` itself (compiled in), so the
//! documented file and the program cannot disagree. Unknown keys are errors: a typo in a
//! field device's config must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The documented default configuration, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../firmware-config/default.toml");

/// Upper bound for `model.threads`; more is certainly a typo on the boards we target.
pub const MAX_THREADS: usize = 256;

/// Accepted `display.width` and `display.height` for the PNG backend (px): below the
/// minimum the screens cannot hold their text, above the maximum it is surely a typo.
pub const DISPLAY_WIDTH_PX: (u32, u32) = (160, 3840);
pub const DISPLAY_HEIGHT_PX: (u32, u32) = (120, 2160);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub log: LogConfig,
    pub device: DeviceConfig,
    pub store: StoreConfig,
    pub hot_folder: HotFolderConfig,
    pub tcp: TcpConfig,
    pub serial: SerialConfig,
    pub protocol: ProtocolConfig,
    pub display: DisplayConfig,
    pub reading: ReadingConfig,
    pub quality: QualityConfig,
    pub camera: CameraConfig,
    /// The file this configuration was read from (as given, for messages and
    /// [`Config::own_files`]); not a key.
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    pub serial: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotFolderConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub stable_ms: u64,
    pub poll_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    pub token: String,
    pub max_connections: usize,
    pub max_line_bytes: usize,
    pub idle_timeout_s: u64,
    pub auth_timeout_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub enabled: bool,
    pub device: PathBuf,
    pub baud: u32,
    pub parity: Parity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    pub allowed_dirs: Vec<PathBuf>,
}

/// `[reading]`: how a bone age becomes a clinical category.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingConfig {
    /// SDS below this is reported as delayed.
    pub delayed_below_sds: f64,
    /// SDS above this is reported as advanced.
    pub advanced_above_sds: f64,
}

impl ReadingConfig {
    pub fn thresholds(&self) -> crate::clinical::Thresholds {
        crate::clinical::Thresholds {
            delayed_below_sds: self.delayed_below_sds,
            advanced_above_sds: self.advanced_above_sds,
        }
    }
}

/// `[quality]`: the image quality gate (src/quality.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Off only for research runs on images known to be radiographs.
    pub enabled: bool,
}

/// `[camera]`: a V4L2 camera (src/source/camera.rs) for `CAPTURE` and `ANALYZE source=camera`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub enabled: bool,
    /// The V4L2 capture node, e.g. `/dev/video0` or a stable `/dev/v4l/by-id/...` link.
    pub device: PathBuf,
    /// Requested frame size (px); the driver may pick the nearest size it supports.
    pub width: u32,
    pub height: u32,
    pub pixel_format: CameraPixelFormat,
    /// Frames grabbed and averaged per capture, to reduce sensor noise.
    pub frames: u32,
    /// How often a missing or busy camera is tried again (seconds).
    pub retry_s: u64,
    /// Where captures are saved as PNG; must lie inside `[protocol] allowed_dirs`.
    pub captures_dir: PathBuf,
}

/// Pixel formats the camera source can convert to grayscale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraPixelFormat {
    /// Motion JPEG: every frame a JPEG; what most USB cameras deliver at high resolution.
    Mjpeg,
    /// Packed YUV 4:2:2 (Y0 U Y1 V); uncompressed, often limited to low frame rates.
    Yuyv,
    /// 8-bit grayscale (industrial and monochrome cameras).
    Grey,
}

/// Accepted `camera.width` / `camera.height` (px) and `camera.frames`.
pub const CAMERA_WIDTH_PX: (u32, u32) = (MIN_CAMERA_SIDE_PX, 8192);
pub const CAMERA_HEIGHT_PX: (u32, u32) = (MIN_CAMERA_SIDE_PX, 8192);
const MIN_CAMERA_SIDE_PX: u32 = crate::source::MIN_SIDE_PX;
pub const CAMERA_FRAMES: (u32, u32) = (1, 32);
pub const CAMERA_RETRY_S: (u64, u64) = (1, 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub backend: BackendKind,
    pub threads: usize,
    /// Average over the model's test-time views (`preprocess.tta_shifts_px`).
    pub tta: bool,
    /// Arithmetic precision of the tract backend.
    pub precision: Precision,
    /// ONNX Runtime execution providers in priority order (backend `ort` or `auto`); every
    /// one listed must register, so a unit never runs on the CPU while the config says GPU.
    pub execution_providers: Vec<ExecutionProviderKind>,
    /// The ONNX Runtime shared library; empty means `ORT_DYLIB_PATH`, else the system's
    /// `libonnxruntime.so` (see [`ModelConfig::ort_library_path`]).
    pub ort_library: PathBuf,
}

impl ModelConfig {
    /// Where to load ONNX Runtime from: `ort_library` if set, else `ORT_DYLIB_PATH`, else
    /// the platform's library name for the dynamic loader's search path. A config file on
    /// the unit wins over the environment, so a service's behaviour is in its config.
    pub fn ort_library_path(&self) -> PathBuf {
        if !self.ort_library.as_os_str().is_empty() {
            return self.ort_library.clone();
        }
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(ORT_DEFAULT_LIBRARY),
        }
    }
}

/// The ONNX Runtime library name the dynamic loader looks for when nothing is configured.
#[cfg(target_os = "macos")]
pub const ORT_DEFAULT_LIBRARY: &str = "libonnxruntime.dylib";
#[cfg(target_os = "windows")]
pub const ORT_DEFAULT_LIBRARY: &str = "onnxruntime.dll";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
pub const ORT_DEFAULT_LIBRARY: &str = "libonnxruntime.so";

/// `[model] backend`: which runtime executes the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Pure Rust, always compiled in.
    Tract,
    /// ONNX Runtime (cargo feature `ort`); start-up fails if it cannot be used.
    Ort,
    /// ONNX Runtime when it loads with every requested provider, otherwise tract.
    Auto,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
            BackendKind::Auto => "auto",
        }
    }
}

/// `[model] precision`: the tract plan's float type. f16 uses half-precision arithmetic
/// where the CPU has it (ARMv8.2+); elsewhere tract emulates it, far slower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
}

/// `[model] execution_providers`: ONNX Runtime execution providers by their short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    Cpu,
    Cuda,
    Tensorrt,
    Rocm,
    Openvino,
    Directml,
    Coreml,
}

impl ExecutionProviderKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProviderKind::Cpu => "cpu",
            ExecutionProviderKind::Cuda => "cuda",
            ExecutionProviderKind::Tensorrt => "tensorrt",
            ExecutionProviderKind::Rocm => "rocm",
            ExecutionProviderKind::Openvino => "openvino",
            ExecutionProviderKind::Directml => "directml",
            ExecutionProviderKind::Coreml => "coreml",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: LogLevel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    pub backend: DisplayBackend,
    /// Framebuffer device, for `backend = "framebuffer"`.
    pub device: PathBuf,
    /// Output file, for `backend = "png"`.
    pub png_path: PathBuf,
    /// PNG size (px); a framebuffer has its own.
    pub width: u32,
    pub height: u32,
    /// How far the picture is turned clockwise before it is written to a framebuffer
    /// (0, 90, 180 or 270 degrees), for a panel mounted turned the other way.
    #[serde(default)]
    pub rotate: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayBackend {
    None,
    Png,
    Framebuffer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {}: key `{key}` = {value}: {expected}", path.display())]
    Value { path: PathBuf, key: &'static str, value: String, expected: String },
}

impl Config {
    /// The compiled-in defaults; relative paths resolve against `./firmware-config`, so a
    /// binary run from the repository root finds `models/`.
    ///
    /// # Errors
    /// Only if the compiled-in file is broken, which a unit test rules out.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::builtin_in(Path::new(""))
    }

    /// The compiled-in defaults as if installed in `root` (`root/firmware-config/`), so that
    /// an installed binary finds its own model whatever the working directory is.
    ///
    /// # Errors
    /// Only if the compiled-in file is broken, which a unit test rules out.
    pub fn builtin_in(root: &Path) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_TOML, &root.join("firmware-config").join("default.toml"))
    }

    /// Reads, parses and validates a config file; every relative path, given or left to
    /// its default, resolves against the file's folder (right for `default.toml` itself).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and what is expected.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        Config::load_in(path, base)
    }

    /// Reads a unit's own config file whose left-out paths are the installation's: a
    /// relative path the file gives resolves against the file's folder, one it leaves to
    /// its default against `defaults_dir` (the installation's `firmware-config/`), so that
    /// `/etc/boneage/unit.toml` setting only `[tcp]` still finds the installed model and
    /// keeps results in the installed store rather than under `/etc`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and what is expected.
    pub fn load_in(path: &Path, defaults_dir: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse_in(&text, path, defaults_dir)
    }

    /// Parses `text` as if read from `path` (used for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_in(text, path, path.parent().unwrap_or(Path::new(".")))
    }

    /// [`Config::parse`] with the defaults' relative paths resolved against `defaults_dir`
    /// (see [`Config::load_in`]).
    fn parse_in(text: &str, path: &Path, defaults_dir: &Path) -> Result<Config, ConfigError> {
        // Missing sections or keys take the documented defaults: merge over DEFAULT_TOML.
        let mut merged: toml::Table = toml::from_str(DEFAULT_TOML)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let defaults = merged.clone();
        let user: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        check_keys(&merged, &user, "")
            .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
        merge(&mut merged, user.clone());
        // serde_path_to_error: a bad value deep in a section ("unknown variant `gpu`") is
        // reported with its key, as every other config error is.
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(merged))
            .map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: value_message(&defaults, &e.path().to_string(), e.inner().message()),
            })?;
        // A path the file sets is relative to the file; one it leaves out, to the defaults.
        let file_dir = path.parent().unwrap_or(Path::new("."));
        let base = |section: &str, key: &str| {
            let given = user
                .get(section)
                .and_then(toml::Value::as_table)
                .is_some_and(|t| t.contains_key(key));
            if given {
                file_dir
            } else {
                defaults_dir
            }
        };
        let resolve = |p: &mut PathBuf, section: &str, key: &str| {
            if p.is_relative() {
                *p = base(section, key).join(&*p);
            }
        };
        resolve(&mut config.model.path, "model", "path");
        // Empty means "not set" (TOML has no null), so only a given path is resolved.
        if !config.model.ort_library.as_os_str().is_empty() {
            resolve(&mut config.model.ort_library, "model", "ort_library");
        }
        resolve(&mut config.store.path, "store", "path");
        // Empty would resolve to the config file's own folder, whose files (this config
        // among them) the watcher would take as images and move away.
        if config.hot_folder.enabled && config.hot_folder.path.as_os_str().is_empty() {
            return Err(ConfigError::Value {
                path: path.to_path_buf(),
                key: "hot_folder.path",
                value: "\"\"".into(),
                expected: "the folder that scanner or PACS software drops images into, e.g. \
                           \"/var/lib/boneage/inbox\", or enabled = false for no hot folder"
                    .into(),
            });
        }
        resolve(&mut config.hot_folder.path, "hot_folder", "path");
        for dir in &mut config.protocol.allowed_dirs {
            resolve(dir, "protocol", "allowed_dirs");
        }
        resolve(&mut config.display.png_path, "display", "png_path");
        resolve(&mut config.camera.captures_dir, "camera", "captures_dir");
        config.file = path.to_path_buf();
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.model.threads > MAX_THREADS {
            return Err(ConfigError::Value {
                path: path.to_path_buf(),
                key: "model.threads",
                value: self.model.threads.to_string(),
                expected: format!("0 (one per core) to {MAX_THREADS}"),
            });
        }
        let value_err = |key: &'static str, value: String, expected: &str| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            value,
            expected: expected.to_string(),
        };
        let providers = &self.model.execution_providers;
        let duplicate = providers.iter().enumerate().any(|(i, p)| providers[..i].contains(p));
        if providers.is_empty() || duplicate {
            let names: Vec<String> =
                providers.iter().map(|p| format!("{:?}", p.as_str())).collect();
            return Err(value_err(
                "model.execution_providers",
                format!("[{}]", names.join(", ")),
                "a non-empty list without repeats, in priority order, e.g. [\"cuda\", \"cpu\"]",
            ));
        }
        let t = &self.tcp;
        // `AUTH token=...` is split at whitespace, so such a token could never be sent. The
        // token itself is not shown: error messages end up in logs.
        if t.token.chars().any(char::is_whitespace) {
            return Err(value_err(
                "tcp.token",
                format!("(not shown, {} characters, with whitespace)", t.token.chars().count()),
                "a token without spaces, tabs or line breaks: AUTH token=<token> is split at \
                 whitespace, so this one could never be sent; remove the whitespace or set a \
                 new token, e.g. from `openssl rand -hex 16`",
            ));
        }
        if t.enabled && !t.bind.ip().is_loopback() && t.token.len() < 8 {
            return Err(value_err(
                "tcp.token",
                format!("{:?}", t.token),
                "a token of at least 8 characters, because tcp.bind is not a loopback address",
            ));
        }
        if !(1..=1024).contains(&t.max_connections) {
            return Err(value_err(
                "tcp.max_connections",
                t.max_connections.to_string(),
                "1 to 1024",
            ));
        }
        if !(64..=1_048_576).contains(&t.max_line_bytes) {
            return Err(value_err(
                "tcp.max_line_bytes",
                t.max_line_bytes.to_string(),
                "64 to 1048576",
            ));
        }
        if !(1..=86_400).contains(&t.idle_timeout_s) {
            return Err(value_err(
                "tcp.idle_timeout_s",
                t.idle_timeout_s.to_string(),
                "1 to 86400 seconds",
            ));
        }
        if !(1..=3600).contains(&t.auth_timeout_s) {
            return Err(value_err(
                "tcp.auth_timeout_s",
                t.auth_timeout_s.to_string(),
                "1 to 3600 seconds",
            ));
        }
        if !(10..=60_000).contains(&self.hot_folder.poll_ms) {
            return Err(value_err(
                "hot_folder.poll_ms",
                self.hot_folder.poll_ms.to_string(),
                "10 to 60000",
            ));
        }
        if self.hot_folder.stable_ms > 600_000 {
            return Err(value_err(
                "hot_folder.stable_ms",
                self.hot_folder.stable_ms.to_string(),
                "0 to 600000",
            ));
        }
        if !(300..=4_000_000).contains(&self.serial.baud) {
            return Err(value_err("serial.baud", self.serial.baud.to_string(), "300 to 4000000"));
        }
        let r = &self.reading;
        for (key, value, ok) in [
            (
                "reading.delayed_below_sds",
                r.delayed_below_sds,
                (-5.0..0.0).contains(&r.delayed_below_sds),
            ),
            (
                "reading.advanced_above_sds",
                r.advanced_above_sds,
                r.advanced_above_sds > 0.0 && r.advanced_above_sds <= 5.0,
            ),
        ] {
            if !ok {
                return Err(ConfigError::Value {
                    path: path.to_path_buf(),
                    key,
                    value: value.to_string(),
                    expected:
                        "a number of SD, below 0 for delayed and above 0 for advanced, within 5"
                            .into(),
                });
            }
        }
        if self.model.path.as_os_str().is_empty() {
            return Err(ConfigError::Value {
                path: path.to_path_buf(),
                key: "model.path",
                value: "\"\"".into(),
                expected: "the path of an ONNX model file".into(),
            });
        }
        let sizes = [
            ("display.width", self.display.width, DISPLAY_WIDTH_PX),
            ("display.height", self.display.height, DISPLAY_HEIGHT_PX),
        ];
        for (key, value, (min, max)) in sizes {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Value {
                    path: path.to_path_buf(),
                    key,
                    value: value.to_string(),
                    expected: format!("{min} to {max} pixels"),
                });
            }
        }
        if ![0, 90, 180, 270].contains(&self.display.rotate) {
            return Err(ConfigError::Value {
                path: path.to_path_buf(),
                key: "display.rotate",
                value: self.display.rotate.to_string(),
                expected: "0, 90, 180 or 270 (degrees clockwise)".into(),
            });
        }
        if self.hot_folder.enabled {
            // Checked lexically, like the camera folder below.
            let inbox = normalize(&self.hot_folder.path);
            let overlapping = self.protocol.allowed_dirs.iter().find(|d| {
                let d = normalize(d);
                inbox.starts_with(&d) || d.starts_with(&inbox)
            });
            if let Some(d) = overlapping {
                return Err(value_err(
                    "protocol.allowed_dirs",
                    format!("{:?}", d.display().to_string()),
                    "folders apart from the enabled hot folder ([hot_folder] path): the folder \
                     watcher would also analyse, and move away, a file put there for ANALYZE; \
                     use a folder of its own such as /var/lib/boneage/requests",
                ));
            }
            if let Some((key, file)) = self
                .own_files()
                .into_iter()
                .find(|(_, f)| f.parent().map(normalize) == Some(inbox.clone()))
            {
                if key == CONFIG_FILE {
                    return Err(value_err(
                        "hot_folder.path",
                        format!("{:?}", self.hot_folder.path.display().to_string()),
                        "a folder other than the one holding this config file: the folder \
                         watcher takes every file placed directly in it as an image and moves \
                         it away, and the next start could not read the config; give the hot \
                         folder a folder of its own such as /var/lib/boneage/inbox",
                    ));
                }
                return Err(value_err(
                    key,
                    format!("{:?}", file.display().to_string()),
                    "a place outside the enabled hot folder ([hot_folder] path): the folder \
                     watcher takes every file placed directly in it as an image to analyse \
                     and moves it away; keep the hot folder for incoming images only",
                ));
            }
        }
        self.validate_camera(path)
    }

    fn validate_camera(&self, path: &Path) -> Result<(), ConfigError> {
        let c = &self.camera;
        let value_err = |key: &'static str, value: String, expected: String| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            value,
            expected,
        };
        for (key, value, (min, max)) in [
            ("camera.width", c.width, CAMERA_WIDTH_PX),
            ("camera.height", c.height, CAMERA_HEIGHT_PX),
        ] {
            if !(min..=max).contains(&value) {
                return Err(value_err(key, value.to_string(), format!("{min} to {max} pixels")));
            }
        }
        let (min, max) = CAMERA_FRAMES;
        if !(min..=max).contains(&c.frames) {
            return Err(value_err(
                "camera.frames",
                c.frames.to_string(),
                format!("{min} to {max} frames averaged per capture"),
            ));
        }
        let (min, max) = CAMERA_RETRY_S;
        if !(min..=max).contains(&c.retry_s) {
            return Err(value_err(
                "camera.retry_s",
                c.retry_s.to_string(),
                format!("{min} to {max} seconds"),
            ));
        }
        if c.enabled {
            if c.device.as_os_str().is_empty() {
                return Err(value_err(
                    "camera.device",
                    "\"\"".into(),
                    "a V4L2 device such as /dev/video0".into(),
                ));
            }
            // Checked lexically: the folders may not exist yet when the config is loaded.
            let captures = normalize(&c.captures_dir);
            if !self.protocol.allowed_dirs.iter().any(|d| captures.starts_with(normalize(d))) {
                return Err(value_err(
                    "camera.captures_dir",
                    format!("{:?}", c.captures_dir.display().to_string()),
                    "a folder inside one of [protocol] allowed_dirs, so captures can be \
                     analysed later with ANALYZE path=..."
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// How [`Config::own_files`] names the config file itself, which no key sets.
pub const CONFIG_FILE: &str = "the config file";

impl Config {
    /// The unit's own files (the result store, the model, the PNG screen, with the camera
    /// on a capture's folder as a file in it, and the config file itself), by key: none may
    /// lie directly in the hot folder, whose watcher would take them as images and move
    /// them away.
    pub fn own_files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut files =
            vec![("store.path", self.store.path.clone()), ("model.path", self.model.path.clone())];
        if !self.file.as_os_str().is_empty() {
            files.push((CONFIG_FILE, self.file.clone()));
        }
        if self.display.backend == DisplayBackend::Png {
            files.push(("display.png_path", self.display.png_path.clone()));
        }
        if self.camera.enabled {
            files.push(("camera.captures_dir", self.camera.captures_dir.join("capture.png")));
        }
        files
    }
}

/// `path` with `.` and `a/..` removed, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {} // "/.." is "/"
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// Every key of `user` must exist in the defaults with a value of the same TOML type, so
/// errors name the full key (`model.threads`) and what is expected.
fn check_keys(defaults: &toml::Table, user: &toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in user {
        let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let Some(default) = defaults.get(key) else {
            let known: Vec<&str> = defaults.keys().map(String::as_str).collect();
            let place = if prefix.is_empty() {
                "sections".to_string()
            } else {
                format!("keys in [{prefix}]")
            };
            return Err(format!("unknown key `{full}`; known {place}: {}", known.join(", ")));
        };
        match (default, value) {
            (toml::Value::Table(d), toml::Value::Table(u)) => check_keys(d, u, &full)?,
            // `-2` where the default is `-2.0`: a number is a number ([`merge`] converts).
            (toml::Value::Float(_), toml::Value::Integer(_)) => {}
            (d, u) if d.type_str() != u.type_str() => {
                return Err(format!(
                    "key `{full}` = {u}: expected {} {} (default: {d})",
                    if d.type_str().starts_with(['a', 'i']) { "an" } else { "a" },
                    d.type_str()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A value of the right type that serde still refused, said for a person: Rust type names
/// become words, and the default shows the expected form (`tcp.bind`: "127.0.0.1:5025").
fn value_message(defaults: &toml::Table, key: &str, serde_message: &str) -> String {
    let mut message = serde_message.to_string();
    for unsigned in ["usize", "u64", "u32", "u16", "u8"] {
        message =
            message.replace(&format!("expected {unsigned}"), "expected a whole number, 0 or more");
    }
    // The key path without list indices (`protocol.allowed_dirs[0]`).
    let mut value = None;
    let mut table = Some(defaults);
    for part in key.split('.').map(|p| p.split('[').next().unwrap_or(p)) {
        value = table.and_then(|t| t.get(part));
        table = value.and_then(toml::Value::as_table);
    }
    match value.filter(|v| !v.is_table()) {
        Some(d) => format!("key `{key}`: {message}; for example the default, {d}"),
        None => format!("key `{key}`: {message}"),
    }
}

/// Overlays `user` on `base` key by key, so a file may set only what it changes.
fn merge(base: &mut toml::Table, user: toml::Table) {
    for (key, value) in user {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u),
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => {
                base.insert(key, toml::Value::Float(i as f64));
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_defaults_parse() {
        let c = Config::builtin().unwrap();
        assert_eq!(c.model.backend, BackendKind::Tract);
        assert_eq!(c.model.threads, 1);
        assert_eq!(c.model.execution_providers, [ExecutionProviderKind::Cpu]);
        assert_eq!(c.model.ort_library, Path::new(""));
        assert_eq!(c.log.level, LogLevel::Warn);
        assert!(c.model.path.ends_with("models/boneage-lite0.onnx"));
        assert_eq!(c.display.backend, DisplayBackend::None);
        assert_eq!((c.display.width, c.display.height), (800, 480));
    }

    #[test]
    fn partial_file_keeps_other_defaults_and_resolves_paths() {
        let c =
            Config::parse("[model]\nthreads = 2\npath = \"m.onnx\"\n", Path::new("/etc/b/x.toml"))
                .unwrap();
        assert_eq!(c.model.threads, 2);
        assert_eq!(c.model.path, Path::new("/etc/b/m.onnx"));
        assert_eq!(c.log.level, LogLevel::Warn);
    }

    #[test]
    fn left_out_paths_are_the_installations() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unit.toml");
        std::fs::write(&file, "[store]\npath = \"r.db\"\n[tcp]\nenabled = true\n").unwrap();
        let install = Path::new("/opt/boneage/firmware-config");
        let c = Config::load_in(&file, install).unwrap();
        // Given here: beside the file. Left out: where default.toml's own would resolve.
        assert_eq!(c.store.path, dir.path().join("r.db"));
        assert_eq!(c.model.path, install.join("../models/boneage-lite0.onnx"));
        assert_eq!(c.hot_folder.path, install.join("../data/inbox"));
        assert_eq!(c.protocol.allowed_dirs, [install.join("../data/requests")]);
        // default.toml read as a file: everything against its own folder, as before.
        let c = Config::load(&file).unwrap();
        assert_eq!(c.model.path, dir.path().join("../models/boneage-lite0.onnx"));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[model]\nthread = 2\n", Path::new("x.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x.toml") && msg.contains("unknown key `model.thread`"), "{msg}");
        assert!(msg.contains("threads"), "lists the known keys: {msg}");
    }

    #[test]
    fn wrong_type_and_variant_are_named() {
        let e = Config::parse("[model]\nthreads = \"two\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`model.threads` = \"two\": expected an integer"), "{e}");
        let e = Config::parse("[model]\nbackend = \"gpu\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("gpu") && e.to_string().contains("tract"), "{e}");
        // A value of the right type but the wrong form shows the form expected.
        let e = Config::parse("[tcp]\nbind = \"nonsense\"\n", Path::new("x.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`tcp.bind`") && msg.contains("\"127.0.0.1:5025\""), "{msg}");
        let e = Config::parse("[hot_folder]\nstable_ms = -5\n", Path::new("x.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`hot_folder.stable_ms`"), "{msg}");
        assert!(msg.contains("a whole number, 0 or more") && !msg.contains("u64"), "{msg}");
    }

    #[test]
    fn public_tcp_needs_a_token() {
        let e =
            Config::parse("[tcp]\nenabled = true\nbind = \"0.0.0.0:5025\"\n", Path::new("x.toml"))
                .unwrap_err();
        assert!(e.to_string().contains("tcp.token"), "{e}");
        let c = Config::parse(
            "[tcp]\nenabled = true\nbind = \"0.0.0.0:5025\"\ntoken = \"s3cret-token\"\n",
            Path::new("x.toml"),
        );
        assert!(c.is_ok());
        let e = Config::parse("[tcp]\nbind = \"localhost\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("bind") || e.to_string().contains("socket"), "{e}");
    }

    #[test]
    fn a_tcp_token_that_could_never_be_sent_is_refused() {
        // AUTH token=... is split at whitespace: refused wherever the port is bound, and
        // the secret is not echoed into the log.
        for token in ["correct horse", " s3cret-token", "s3cret-token\\t", "s3cret\\ntoken"] {
            for bind in ["0.0.0.0:5025", "127.0.0.1:5025"] {
                let toml =
                    format!("[tcp]\nenabled = true\nbind = \"{bind}\"\ntoken = \"{token}\"\n");
                let e = Config::parse(&toml, Path::new("x.toml")).unwrap_err().to_string();
                assert!(e.contains("`tcp.token`") && e.contains("without spaces"), "{e}");
                assert!(e.contains("remove the whitespace"), "{e}");
                assert!(!e.contains("horse") && !e.contains("s3cret"), "{e}");
            }
        }
        // '=' is fine: only the first '=' of `token=` splits key from value.
        let c = Config::parse(
            "[tcp]\nenabled = true\nbind = \"0.0.0.0:5025\"\ntoken = \"c2VjcmV0LXRva2Vu==\"\n",
            Path::new("x.toml"),
        );
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn reading_and_quality_sections() {
        let c = Config::builtin().unwrap();
        assert_eq!((c.reading.delayed_below_sds, c.reading.advanced_above_sds), (-2.0, 2.0));
        assert!(c.quality.enabled);
        let c = Config::parse(
            "[reading]\nadvanced_above_sds = 1.5\n[quality]\nenabled = false\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!((c.reading.delayed_below_sds, c.reading.advanced_above_sds), (-2.0, 1.5));
        assert!(!c.quality.enabled);
        let e =
            Config::parse("[reading]\ndelayed_below_sds = 2\n", Path::new("x.toml")).unwrap_err();
        assert!(
            e.to_string().contains("reading.delayed_below_sds") && e.to_string().contains("= 2"),
            "{e}"
        );
        let e = Config::parse("[reading]\nadvanced_above_sds = -1.0\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("reading.advanced_above_sds"), "{e}");
        let e = Config::parse("[quality]\nenable = false\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("enable"), "{e}");
    }

    #[test]
    fn out_of_range_is_named() {
        let e = Config::parse("[model]\nthreads = 1000\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`model.threads` = 1000"), "{e}");
    }

    #[test]
    fn display_size_out_of_range_is_named() {
        let e = Config::parse("[display]\nwidth = 100\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`display.width` = 100: 160 to 3840"), "{e}");
        let e = Config::parse("[display]\nheight = 5000\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`display.height` = 5000"), "{e}");
        let e = Config::parse("[display]\nrotate = 45\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`display.rotate` = 45: 0, 90, 180 or 270"), "{e}");
        let c = Config::parse("[display]\nrotate = 270\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.display.rotate, 270);
    }

    #[test]
    fn display_backend_and_png_path() {
        let text = "[display]\nbackend = \"png\"\npng_path = \"s.png\"\n";
        let c = Config::parse(text, Path::new("/etc/b/x.toml")).unwrap();
        assert_eq!(c.display.backend, DisplayBackend::Png);
        assert_eq!(c.display.png_path, Path::new("/etc/b/s.png"));
        let e = Config::parse("[display]\nbackend = \"hdmi\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("hdmi") && e.to_string().contains("framebuffer"), "{e}");
    }

    #[test]
    fn camera_defaults_and_ranges() {
        let c = Config::builtin().unwrap();
        assert!(!c.camera.enabled);
        assert_eq!(c.camera.device, Path::new("/dev/video0"));
        assert_eq!(c.camera.pixel_format, CameraPixelFormat::Mjpeg);
        assert_eq!(c.camera.frames, 4);
        for (text, key) in [
            ("[camera]\nframes = 0\n", "`camera.frames` = 0: 1 to 32"),
            ("[camera]\nframes = 33\n", "`camera.frames` = 33"),
            ("[camera]\nwidth = 16\n", "`camera.width` = 16: 32 to 8192 pixels"),
            ("[camera]\nheight = 10000\n", "`camera.height` = 10000"),
            ("[camera]\nretry_s = 0\n", "`camera.retry_s` = 0: 1 to 3600 seconds"),
        ] {
            let e = Config::parse(text, Path::new("x.toml")).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let e =
            Config::parse("[camera]\npixel_format = \"rgb\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("rgb") && e.to_string().contains("yuyv"), "{e}");
        let e = Config::parse("[camera]\nfps = 30\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown key `camera.fps`"), "{e}");
    }

    #[test]
    fn enabled_camera_needs_captures_inside_allowed_dirs() {
        let text = "[camera]\nenabled = true\ncaptures_dir = \"/srv/caps\"\n\
                    [protocol]\nallowed_dirs = [\"/srv/inbox\"]\n";
        let e = Config::parse(text, Path::new("x.toml")).unwrap_err();
        assert!(
            e.to_string().contains("camera.captures_dir") && e.to_string().contains("allowed_dirs"),
            "{e}"
        );
        // Relative paths resolve against the file's folder; `..` is compared lexically.
        let text = "[camera]\nenabled = true\ncaptures_dir = \"../data/./captures\"\n\
                    [protocol]\nallowed_dirs = [\"../data\"]\n";
        let c = Config::parse(text, Path::new("/etc/boneage/x.toml")).unwrap();
        assert_eq!(c.camera.captures_dir, Path::new("/etc/boneage/../data/./captures"));
        // The shipped defaults agree: enabling the camera is the only key a unit needs.
        let c =
            Config::parse("[camera]\nenabled = true\n", Path::new("/etc/boneage/x.toml")).unwrap();
        assert!(c.camera.captures_dir.starts_with(&c.protocol.allowed_dirs[0]));
        // A disabled camera is not checked.
        let text = "[camera]\ncaptures_dir = \"/elsewhere\"\n";
        assert!(Config::parse(text, Path::new("x.toml")).is_ok());
        let e = Config::parse(
            "[camera]\nenabled = true\ndevice = \"\"\n[protocol]\nallowed_dirs = [\"../data\"]\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("camera.device"), "{e}");
    }

    #[test]
    fn value_errors_name_the_key_and_integers_serve_as_floats() {
        let err = |text: &str| Config::parse(text, Path::new("x.toml")).unwrap_err().to_string();
        assert!(
            err("[model]\nbackend = \"gpu\"\n").contains("key `model.backend`: unknown variant")
        );
        assert!(err("[tcp]\nbind = \"nonsense\"\n").contains("key `tcp.bind`"));
        assert!(err("[model]\nthreads = -1\n").contains("key `model.threads`"));
        let c = Config::parse("[reading]\ndelayed_below_sds = -3\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.reading.delayed_below_sds, -3.0);
    }

    #[test]
    fn analyze_folders_stay_out_of_the_hot_folder() {
        let text = "[hot_folder]\nenabled = true\npath = \"/srv/in\"\n[protocol]\nallowed_dirs = ";
        for dirs in ["[\"/srv/in\"]", "[\"/srv\"]", "[\"/srv/req\", \"/srv/in/sub\"]"] {
            let e = Config::parse(&format!("{text}{dirs}\n"), Path::new("x.toml")).unwrap_err();
            assert!(e.to_string().contains("protocol.allowed_dirs"), "{e}");
        }
        Config::parse(&format!("{text}[\"/srv/req\"]\n"), Path::new("x.toml")).unwrap();
    }

    /// The unit's own files stay out of the hot folder, whose watcher would move them away
    /// (the result store most of all); a sub-folder of it is not watched and is allowed.
    #[test]
    fn own_files_stay_out_of_the_hot_folder() {
        let base = "[hot_folder]\nenabled = true\npath = \"/srv/data/./in\"\n\
                    [protocol]\nallowed_dirs = [\"/srv/req\"]\n";
        for (extra, key) in [
            ("[store]\npath = \"/srv/data/in/results.db\"\n", "store.path"),
            ("[model]\npath = \"/srv/data/in/../in/m.onnx\"\n", "model.path"),
            (
                "[display]\nbackend = \"png\"\npng_path = \"/srv/data/in/s.png\"\n",
                "display.png_path",
            ),
            ("[camera]\nenabled = true\ncaptures_dir = \"/srv/data/in\"\n", "camera.captures_dir"),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), Path::new("x.toml")).unwrap_err();
            assert!(e.to_string().contains(key) && e.to_string().contains("hot folder"), "{e}");
        }
        for fine in [
            "[store]\npath = \"/srv/data/results.db\"\n",
            "[store]\npath = \"/srv/data/in/db/results.db\"\n",
            "[display]\nbackend = \"framebuffer\"\npng_path = \"/srv/data/in/s.png\"\n",
        ] {
            Config::parse(&format!("{base}{fine}"), Path::new("x.toml")).unwrap();
        }
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/../a")), Path::new("/a"));
        assert_eq!(normalize(Path::new("../a/..")), Path::new(".."));
        assert!(!normalize(Path::new("/srv/inbox/../caps")).starts_with("/srv/inbox"));
    }

    #[test]
    fn backend_and_execution_providers() {
        let text =
            "[model]\nbackend = \"ort\"\nexecution_providers = [\"tensorrt\", \"cuda\", \"cpu\"]\n";
        let c = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.model.backend, BackendKind::Ort);
        use ExecutionProviderKind::{Cpu, Cuda, Tensorrt};
        assert_eq!(c.model.execution_providers, [Tensorrt, Cuda, Cpu]);
        let c = Config::parse("[model]\nbackend = \"auto\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.model.backend, BackendKind::Auto);
        assert_eq!(c.model.execution_providers, [Cpu]);

        let c = Config::parse("[model]\nprecision = \"f16\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.model.precision, Precision::F16);
        let e = Config::parse("[model]\nprecision = \"f8\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("f8") && e.to_string().contains("f16"), "{e}");

        let e = Config::parse("[model]\nbackend = \"onnx\"\n", Path::new("x.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("onnx") && msg.contains("ort") && msg.contains("auto"), "{msg}");
        let e = Config::parse("[model]\nexecution_providers = [\"gpu\"]\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("gpu") && e.to_string().contains("cuda"), "{e}");
        let e = Config::parse("[model]\nexecution_providers = \"cuda\"\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("`model.execution_providers`"), "{e}");
        let e =
            Config::parse("[model]\nexecution_providers = []\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`model.execution_providers` = []: a non-empty"), "{e}");
        let e = Config::parse(
            "[model]\nexecution_providers = [\"cpu\", \"cpu\"]\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("without repeats"), "{e}");
    }

    #[test]
    fn ort_library_resolves_against_the_file_and_wins_over_the_environment() {
        let c = Config::parse(
            "[model]\nort_library = \"lib/libonnxruntime.so\"\n",
            Path::new("/etc/b/x.toml"),
        )
        .unwrap();
        assert_eq!(c.model.ort_library, Path::new("/etc/b/lib/libonnxruntime.so"));
        // Set in the file: the environment is not consulted.
        assert_eq!(c.model.ort_library_path(), Path::new("/etc/b/lib/libonnxruntime.so"));
        let c = Config::parse(
            "[model]\nort_library = \"/opt/ort/libonnxruntime.so\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.model.ort_library, Path::new("/opt/ort/libonnxruntime.so"));
        // Empty stays empty (unset), not the config's folder.
        let c = Config::parse("[model]\nort_library = \"\"\n", Path::new("/etc/b/x.toml")).unwrap();
        assert_eq!(c.model.ort_library, Path::new(""));
        let e = Config::parse("[model]\nort_library = 1\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("`model.ort_library` = 1: expected a string"), "{e}");
    }
}
