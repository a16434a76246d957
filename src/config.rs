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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub log: LogConfig,
    pub reading: ReadingConfig,
    pub quality: QualityConfig,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub backend: BackendKind,
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Tract,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: LogLevel,
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
    /// binary run from the installation (or repository) root finds `models/`.
    ///
    /// # Errors
    /// Only if the compiled-in file is broken, which a unit test rules out.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_TOML, Path::new("firmware-config/default.toml"))
    }

    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and what is expected.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (used for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // Missing sections or keys take the documented defaults: merge over DEFAULT_TOML.
        let mut merged: toml::Table = toml::from_str(DEFAULT_TOML)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let user: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        merge(&mut merged, user);
        let mut config: Config = merged.try_into().map_err(|e: toml::de::Error| {
            ConfigError::Parse { path: path.to_path_buf(), message: e.message().to_string() }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.model.path.is_relative() {
            config.model.path = base.join(&config.model.path);
        }
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
                (0.0..5.0).contains(&r.advanced_above_sds),
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
        Ok(())
    }
}

/// Overlays `user` on `base` key by key, so a file may set only what it changes.
fn merge(base: &mut toml::Table, user: toml::Table) {
    for (key, value) in user {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u),
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
        assert_eq!(c.log.level, LogLevel::Warn);
        assert!(c.model.path.ends_with("models/boneage-lite0.onnx"));
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
    fn unknown_key_is_named() {
        let e = Config::parse("[model]\nthread = 2\n", Path::new("x.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x.toml") && msg.contains("thread"), "{msg}");
    }

    #[test]
    fn wrong_type_and_variant_are_named() {
        let e = Config::parse("[model]\nthreads = \"two\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("threads"), "{e}");
        let e = Config::parse("[model]\nbackend = \"gpu\"\n", Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("gpu") && e.to_string().contains("tract"), "{e}");
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
        assert!(e.to_string().contains("model.threads = 1000"), "{e}");
    }
}
