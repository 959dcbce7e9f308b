//! The root configuration: one TOML file whose sections belong to the modules.
//! Every key has a default; `config/nagare.example.toml` documents them all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::ApiConfig;
use crate::decode::DecodeConfig;
use crate::decode::persist::DecoderStateConfig;
use crate::enrich::EnrichConfig;
use crate::listener::ListenerConfig;
use crate::query::QueryConfig;
use crate::rollup::RollupConfig;
use crate::util::line_col;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for everything that must survive a restart (templates, exporter
    /// options, rollups, dashboards).
    pub state_dir: PathBuf,
    pub listener: ListenerConfig,
    pub decode: DecodeConfig,
    /// How `decoder.json` (templates and exporter options) is written.
    pub decoder_state: DecoderStateConfig,
    pub enrich: EnrichConfig,
    pub rollup: RollupConfig,
    pub query: QueryConfig,
    pub http: ApiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/nagare"),
            listener: ListenerConfig::default(),
            decode: DecodeConfig::default(),
            decoder_state: DecoderStateConfig::default(),
            enrich: EnrichConfig::default(),
            rollup: RollupConfig::default(),
            query: QueryConfig::default(),
            http: ApiConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file; errors name the line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listener.listen.is_empty() {
            return Err(ConfigError::Invalid(
                "listener.listen is empty: nothing to receive on".into(),
            ));
        }
        self.http
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}

/// Formats a TOML error as "line L, column C: message".
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().to_string();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example sets every key to its default: parsing it gives the
    /// defaults back (so the example cannot drift from the code).
    #[test]
    fn example_config_parses_and_documents_the_defaults() {
        let text = include_str!("../config/nagare.example.toml");
        let cfg = Config::from_toml(text).expect("example parses");
        let def = Config::default();
        let ser = |c: &Config| toml::to_string(c).expect("serialize");
        assert_eq!(ser(&cfg), ser(&def));
        // and every commented-out key is a real key too
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|x| x.contains(" = \""))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        Config::from_toml(&uncommented).expect("example with its optional keys set");
    }

    #[test]
    fn example_inventory_parses_without_warnings() {
        let inv = crate::enrich::inventory::Inventory::parse(
            include_str!("../config/inventory.example.toml"),
            "inventory.example.toml",
        )
        .expect("example inventory parses");
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
        assert_eq!(inv.vms.len(), 2);
        assert_eq!(inv.switches.len(), 1);
    }

    #[test]
    fn unknown_keys_are_refused_with_position() {
        let e = Config::from_toml("state_dir = \"/tmp/x\"\n[listener]\nlisten = []\nbogus = 1\n")
            .unwrap_err();
        assert!(e.starts_with("line 4, column 1:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_toml("[http]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.listener.listen.len(), 2);
        assert_eq!(c.http.listen.port(), 1);
    }
}
