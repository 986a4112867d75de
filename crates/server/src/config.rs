//! The whole configuration: the engine's sections (each declared by its own crate) composed
//! with the HTTP layer's own (`server`, `auth`); TOML file + `CASCADE_*` environment
//! overrides, unknown keys rejected, validated once at start.

use cascade_runtime::{EngineConfig, RuntimeError};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Top-level sections; environment variables `CASCADE_<SECTION>__<KEY>` override them.
const SECTIONS: &[&str] = &[
    "data_dir",
    "server",
    "auth",
    "storage",
    "bus",
    "features",
    "models",
    "pipeline",
    "faults",
    "surfaces",
    "experiments",
    "drift",
    "gorse",
];

/// The engine's sections (reached through `Deref`: `config.models`, `config.data_dir`)
/// and the HTTP layer's. The engine opens on [`EngineConfig`]; `Config` converts into it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub engine: EngineConfig,
    pub server: ServerSection,
    pub auth: AuthSection,
    pub gorse: GorseSection,
}

impl std::ops::Deref for Config {
    type Target = EngineConfig;

    fn deref(&self) -> &EngineConfig {
        &self.engine
    }
}

impl std::ops::DerefMut for Config {
    fn deref_mut(&mut self) -> &mut EngineConfig {
        &mut self.engine
    }
}

impl From<Config> for EngineConfig {
    fn from(c: Config) -> Self {
        c.engine
    }
}

cascade_training::impl_train_config!(Config, engine);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub addr: String,
    /// Largest accepted request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Most entries in one items/users/events batch; more gets 413.
    pub max_batch: usize,
    /// Largest `n` of a recommendation request.
    pub max_n: usize,
    /// Requests in flight per route group (reads, writes, admin); past it, 503 with
    /// `Retry-After` at once instead of queueing into timeouts.
    pub max_inflight: usize,
    /// Open connections at most; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Time a connection may take to send a request's headers, and may stay idle between
    /// requests; then it is closed (slow or idle clients hold no connection slot).
    pub header_timeout_ms: u64,
    pub rate_limit: RateLimitSection,
}

/// `[server.rate_limit]`: requests per second per API key (without keys, per client
/// address) and route group; 0 is unlimited (the default). Past it, 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    pub read_per_s: u32,
    pub write_per_s: u32,
    pub admin_per_s: u32,
    /// The bucket holds this many seconds of the rate (bursts up to it pass at once).
    pub burst_s: f64,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            read_per_s: 0,
            write_per_s: 0,
            admin_per_s: 0,
            burst_s: 1.0,
        }
    }
}

/// API keys by role. With no key configured at all, the API is open (local use). Once any
/// key is set: reads need a read, write or admin key; writes need a write or admin key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub read_keys: Vec<String>,
    pub write_keys: Vec<String>,
    pub admin_keys: Vec<String>,
}

/// Gorse's v0.5 REST API under `/api/*` (a migration path: Gorse clients against Cascade's
/// pipeline). Gorse's feedback types are free strings; each list names the types that are one
/// Cascade event (listings name them by the list's first); a type that is a Cascade event
/// name (`click`, `watch`, `share`, ...) is that event; any other is refused with 400.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GorseSection {
    pub enabled: bool,
    /// The surface `/api/recommend` runs (its whole cascade, policy and fallbacks).
    pub surface: String,
    /// Types that are a `like`.
    pub positive_feedback_types: Vec<String>,
    /// Types that are a `view`.
    pub read_feedback_types: Vec<String>,
    /// Types that are a `skip`.
    pub negative_feedback_types: Vec<String>,
}

impl Default for GorseSection {
    fn default() -> Self {
        Self {
            enabled: true,
            surface: "home".into(),
            positive_feedback_types: vec!["like".into(), "star".into()],
            read_feedback_types: vec!["read".into()],
            negative_feedback_types: vec!["dislike".into()],
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            max_batch: 10_000,
            max_n: 500,
            max_inflight: 64,
            max_connections: 4096,
            header_timeout_ms: 30_000,
            rate_limit: RateLimitSection::default(),
        }
    }
}

impl ServerSection {
    fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes < 1024 {
            return Err("server.max_body_bytes: must be at least 1024".into());
        }
        if self.max_batch == 0 || self.max_n == 0 {
            return Err("server.max_batch / server.max_n: must be positive".into());
        }
        if self.max_connections == 0 || self.header_timeout_ms == 0 {
            return Err(
                "server.max_connections / server.header_timeout_ms: must be positive".into(),
            );
        }
        let b = self.rate_limit.burst_s;
        if !(b.is_finite() && (0.001..=3600.0).contains(&b)) {
            return Err(format!(
                "server.rate_limit.burst_s = {b}: must be within 0.001..=3600"
            ));
        }
        Ok(())
    }
}

impl AuthSection {
    fn validate(&self) -> Result<(), String> {
        for keys in [&self.read_keys, &self.write_keys, &self.admin_keys] {
            if keys.iter().any(|k| k.len() < 8) {
                return Err("auth: API keys must be at least 8 characters".into());
            }
        }
        Ok(())
    }
}

/// `server__max_n` or `server.max_n` → `server`. Other `CASCADE_*` variables (e.g. the test
/// services' URLs) are not configuration and are left alone.
fn section_of(key: &str) -> &str {
    let end = [key.find("__"), key.find('.')]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(key.len());
    &key[..end]
}

impl Config {
    /// The built-in defaults over `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<std::path::PathBuf>) -> Self {
        let mut c = Self::default();
        c.engine.data_dir = data_dir.into();
        c
    }

    /// Defaults, then the TOML file (if any), then `CASCADE_*` variables
    /// (`CASCADE_SERVER__ADDR=0.0.0.0:8080`, `CASCADE_STORAGE__FSYNC=false`, ...).
    pub fn load(file: Option<&Path>) -> Result<Self, RuntimeError> {
        let err = |e: figment::Error| RuntimeError::Config(e.to_string());
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(RuntimeError::Config(format!(
                    "config file {} not found",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(Env::prefixed("CASCADE_").split("__").filter(|k| {
            SECTIONS
                .iter()
                .any(|s| section_of(k.as_str()).eq_ignore_ascii_case(s))
        }));
        // The engine's sections are flattened in, which serde cannot combine with
        // `deny_unknown_fields`: unknown top-level keys are rejected here, every section
        // rejects its own.
        let top: std::collections::BTreeMap<String, figment::value::Value> =
            fig.extract().map_err(err)?;
        if let Some(k) = top.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            return Err(RuntimeError::Config(format!(
                "unknown field `{k}`, expected one of {SECTIONS:?}"
            )));
        }
        let cfg: Config = fig.extract().map_err(err)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects configurations that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        self.server
            .validate()
            .and_then(|()| self.auth.validate())
            .map_err(RuntimeError::Config)?;
        if self.gorse.enabled && !self.engine.surfaces.contains_key(&self.gorse.surface) {
            return Err(RuntimeError::Config(
                "gorse.surface: names no configured surface".into(),
            ));
        }
        self.engine.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_runtime::{BusBackend, StorageBackend};
    use cascade_surfaces::{SelectorKind, SurfaceConfig};

    #[test]
    fn defaults_are_valid_and_have_home_and_feed() {
        let c = Config::default();
        c.validate().expect("valid");
        assert!(c.surfaces.contains_key("home") && c.surfaces.contains_key("feed"));
    }

    #[test]
    fn policy_settings_are_validated_naming_the_key() {
        let bad = |f: &dyn Fn(&mut SurfaceConfig)| {
            let mut c = Config::default();
            f(c.surfaces.get_mut("home").expect("home"));
            c.validate().expect_err("invalid").to_string()
        };
        let e = bad(&|s| {
            s.selectors = vec![
                SelectorKind::TopScore,
                SelectorKind::Sponsored,
                SelectorKind::Pinned,
            ]
        });
        assert!(
            e.contains("surfaces.home.selectors") && e.contains("last"),
            "{e}"
        );
        let e = bad(&|s| s.selectors = vec![SelectorKind::Exploration, SelectorKind::TopScore]);
        assert!(e.contains("surfaces.home.selectors"), "{e}");
        let e = bad(&|s| s.exploration.share = 0.9);
        assert!(e.contains("surfaces.home.exploration"), "{e}");
        let e = bad(&|s| s.mmr.lambda = 2.0);
        assert!(e.contains("surfaces.home.mmr"), "{e}");
        let e = bad(&|s| {
            s.boosts = vec![cascade_policy::BoostRule {
                name: "nothing".into(),
                add: 1.0,
                ..Default::default()
            }]
        });
        assert!(
            e.contains("surfaces.home.boosts") && e.contains("nothing"),
            "{e}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn scale_out_backends_are_chosen_by_env_and_checked_together() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CASCADE_STORAGE__BACKEND", "redis");
            let err = Config::load(None).expect_err("redis without the bus");
            assert!(err.to_string().contains("storage.backend"), "{err}");
            jail.set_env("CASCADE_BUS__BACKEND", "nats");
            jail.set_env("CASCADE_STORAGE__REDIS__PREFIX", "blue-1");
            let c = Config::load(None).expect("valid");
            assert_eq!(c.storage.backend, StorageBackend::Redis);
            assert_eq!(c.bus.backend, BusBackend::Nats);
            assert_eq!(c.storage.redis.prefix, "blue-1");
            jail.set_env("CASCADE_STORAGE__REDIS__PREFIX", "a b");
            let err = Config::load(None).expect_err("bad prefix");
            assert!(err.to_string().contains("storage.redis.prefix"), "{err}");
            jail.set_env("CASCADE_STORAGE__REDIS__PREFIX", "ok");
            jail.set_env("CASCADE_BUS__NATS__STREAM", "has.dot");
            let err = Config::load(None).expect_err("bad stream");
            assert!(err.to_string().contains("bus.nats"), "{err}");
            jail.set_env("CASCADE_BUS__BACKEND", "kafka");
            let err = Config::load(None).expect_err("unknown backend");
            assert!(err.to_string().contains("kafka"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn unknown_keys_are_rejected() {
        // Inside a Jail: environment-override tests change CASCADE_* variables meanwhile.
        figment::Jail::expect_with(|_jail| {
            let dir = tempfile::tempdir().expect("tmp");
            let f = dir.path().join("c.toml");
            // In this layer's own section, in an engine section (flattened in), at the top
            // level, and in a surface.
            for (toml, key) in [
                ("[server]\nadress = \"x\"\n", "adress"),
                ("[storage]\nfsynk = false\n", "fsynk"),
                ("[models.ranker.gbdt]\ntrees_ = 3\n", "trees_"),
                ("datadir = \"x\"\n", "datadir"),
                ("[surface.home]\nbudget_ms = 5\n", "surface"),
                ("[surfaces.home]\nbudget = 5\n", "budget"),
            ] {
                std::fs::write(&f, toml).expect("write");
                let err = Config::load(Some(&f)).expect_err("must reject").to_string();
                assert!(err.contains(key), "{toml}: {err}");
            }
            // Known keys of the flattened sections still load.
            std::fs::write(&f, "data_dir = \"d\"\n[storage]\nfsync = false\n").expect("write");
            let c = Config::load(Some(&f)).expect("valid");
            assert!(!c.storage.fsync && c.data_dir == Path::new("d"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn environment_overrides_file_and_ignores_other_cascade_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[server]\nmax_n = 7\n")?;
            jail.set_env("CASCADE_SERVER__MAX_N", "9");
            jail.set_env("CASCADE_STORAGE__FSYNC", "false");
            jail.set_env("CASCADE_TEST_REDIS_URL", "redis://127.0.0.1:6379");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.max_n, 9);
            assert!(!c.storage.fsync);
            jail.set_env("CASCADE_SERVER__NOPE", "1");
            let err = Config::load(Some(Path::new("c.toml"))).expect_err("unknown key");
            assert!(err.to_string().contains("nope"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn file_values_apply_and_validation_names_the_key() {
        // Inside a Jail: environment-override tests change CASCADE_* variables meanwhile.
        figment::Jail::expect_with(|_jail| {
            let dir = tempfile::tempdir().expect("tmp");
            let f = dir.path().join("c.toml");
            std::fs::write(&f, "[server]\nmax_n = 7\n[surfaces.home]\nbudget_ms = 0\n")
                .expect("write");
            let err = Config::load(Some(&f)).expect_err("budget 0");
            assert!(err.to_string().contains("surfaces.home.budget_ms"), "{err}");
            std::fs::write(&f, "[server]\nmax_n = 7\n[surfaces.home]\nbudget_ms = 80\n")
                .expect("write");
            let c = Config::load(Some(&f)).expect("ok");
            assert_eq!(c.server.max_n, 7);
            assert_eq!(c.surfaces["home"].budget_ms, 80);
            // Other defaults of the surface survive the partial override.
            assert_eq!(c.surfaces["home"].sources.len(), 7);
            Ok(())
        });
    }
}

#[cfg(test)]
mod readme {
    use super::*;
    use cascade_surfaces::SelectorKind;

    /// Every configuration block in the README must load as it stands.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn readme_config_example_is_valid() {
        // Inside a Jail: environment-override tests change CASCADE_* variables meanwhile.
        figment::Jail::expect_with(|_jail| {
            let readme = include_str!("../../../README.md");
            let blocks: Vec<&str> = readme
                .split("```toml\n")
                .skip(1)
                .map(|b| b.split("```").next().expect("block end"))
                .collect();
            assert!(blocks.len() >= 3, "README has its configuration blocks");
            let dir = tempfile::tempdir().expect("tmp");
            let f = dir.path().join("cascade.toml");
            let mut main = None;
            for (i, block) in blocks.iter().enumerate() {
                std::fs::write(&f, block).expect("write");
                let c = Config::load(Some(&f))
                    .unwrap_or_else(|e| panic!("README toml block {i} loads: {e}"));
                if block.contains("[server]") {
                    main = Some(c);
                }
            }
            // The full example under "Configuration" sets the home surface's pipeline.
            let c = main.expect("the full configuration example");
            let home = &c.surfaces["home"];
            assert_eq!(home.sources.len(), 4);
            assert_eq!(home.boosts.len(), 2);
            assert_eq!(home.selectors.last(), Some(&SelectorKind::Sponsored));
            assert!(c.surfaces.contains_key("feed"));
            Ok(())
        });
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any configuration file, however mangled, loads or is refused with an error: the
        /// README's full example with bytes overwritten, cut, or replaced by noise.
        #[test]
        #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
        fn any_config_file_loads_or_is_refused(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in proptest::option::of(any::<usize>()),
            noise in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400)),
        ) {
            let readme = include_str!("../../../README.md");
            let start = readme.find("```toml\ndata_dir").map_or(0, |s| s + "```toml\n".len());
            let len = readme[start..].find("```").unwrap_or(0);
            let mut bytes = readme.as_bytes()[start..start + len].to_vec();
            for (at, b) in edits {
                let n = bytes.len().max(1);
                if let Some(x) = bytes.get_mut(at % n) {
                    *x = b;
                }
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            if let Some(n) = noise {
                bytes = n;
            }
            figment::Jail::expect_with(|_jail| {
                let dir = tempfile::tempdir().expect("tmp");
                let f = dir.path().join("cascade.toml");
                std::fs::write(&f, &bytes).expect("write");
                let _ = Config::load(Some(&f));
                Ok(())
            });
        }
    }
}
