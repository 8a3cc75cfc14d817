//! The service's settings, read from the environment.

use std::net::SocketAddr;

/// Where cached values are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// Redis at this URL (`CACHE=redis`, `REDIS_URL=redis://127.0.0.1:6379/`).
    Redis(String),
    /// This process's memory (`CACHE=memory`, the default without `REDIS_URL`).
    Memory,
    /// No caching: every read goes to PostgreSQL (`CACHE=off`).
    Off,
}

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LISTEN`: the address to serve HTTP on (default `127.0.0.1:3000`;
    /// port 0 picks a free one, printed at start-up).
    pub listen: SocketAddr,
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    pub database_url: String,
    /// `DATABASE_SCHEMA`: the schema the service creates and migrates at
    /// start-up, and works in (default `service`).
    pub schema: String,
    /// `DATABASE_POOL`: connections in the pool (default 16).
    pub pool_size: u32,
    /// `CACHE` (`redis`, `memory` or `off`) and `REDIS_URL`.
    pub store: Store,
    /// `CACHE_PREFIX`: prefix of every key the cache writes (default `svc:`).
    pub cache_prefix: String,
    /// `SEED_USERS`: when the tables are empty at start-up, fill them with
    /// this many users, each with 3 books and 2 cats (default 100; 0: no).
    pub seed_users: i64,
}

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("setting {name}={value:?}: {reason}")]
pub struct SettingError {
    name: &'static str,
    value: String,
    reason: String,
}

impl Settings {
    /// Read the settings from the environment (see each field for its
    /// variable and default).
    pub fn from_env() -> Result<Settings, SettingError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the settings from `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingError> {
        let get = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_owned());
        let listen = parse("LISTEN", get("LISTEN", "127.0.0.1:3000"))?;
        let pool_size = parse("DATABASE_POOL", get("DATABASE_POOL", "16"))?;
        let seed_users = parse("SEED_USERS", get("SEED_USERS", "100"))?;
        let redis_url = lookup("REDIS_URL");
        let store = match (lookup("CACHE").as_deref(), redis_url) {
            (Some("redis"), Some(url)) | (None, Some(url)) => Store::Redis(url),
            (Some("redis"), None) => Store::Redis("redis://127.0.0.1:6379/".to_owned()),
            (Some("memory"), _) | (None, None) => Store::Memory,
            (Some("off"), _) => Store::Off,
            (Some(other), _) => {
                return Err(SettingError {
                    name: "CACHE",
                    value: other.to_owned(),
                    reason: "expected `redis`, `memory` or `off`".to_owned(),
                });
            }
        };
        let schema = get("DATABASE_SCHEMA", "service");
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(SettingError {
                name: "DATABASE_SCHEMA",
                value: schema,
                reason: "use lowercase letters, digits and `_`".to_owned(),
            });
        }
        Ok(Settings {
            listen,
            database_url: get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            schema,
            pool_size,
            store,
            cache_prefix: get("CACHE_PREFIX", "svc:"),
            seed_users,
        })
    }
}

fn parse<T>(name: &'static str, value: String) -> Result<T, SettingError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|error: T::Err| SettingError {
        name,
        reason: error.to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingError> {
        Settings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_store_follows_cache_and_redis_url() {
        assert_eq!(settings(&[]).expect("defaults").store, Store::Memory);
        assert_eq!(
            settings(&[("REDIS_URL", "redis://h/")])
                .expect("redis")
                .store,
            Store::Redis("redis://h/".to_owned())
        );
        assert_eq!(
            settings(&[("CACHE", "off"), ("REDIS_URL", "redis://h/")])
                .expect("off")
                .store,
            Store::Off
        );
        assert!(settings(&[("CACHE", "yes")]).is_err());
        assert!(settings(&[("DATABASE_SCHEMA", "x; drop")]).is_err());
        assert!(settings(&[("LISTEN", "nowhere")]).is_err());
    }
}
