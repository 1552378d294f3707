//! The server's schema and the facts derived from it, fetched at most once
//! per session and shared (completion, `help`, deprecation warnings, `/oob`
//! checks), with the facts kept on disk between sessions.
//!
//! Fetching the schema costs QEMU about 25 ms, more than a whole
//! one-command session; the facts the safety net needs are a few
//! kilobytes. So they are cached in `$XDG_CACHE_HOME/qmp-shell/` (else
//! `~/.cache/qmp-shell/`, a 0700 directory, files 0600), under a key made
//! of the QEMU version and package from the greeting and the server's
//! command list (`query-commands`, half a millisecond), which tells apart
//! builds, and a storage daemon from the emulator of the same version. The
//! requests the shell makes on its own are kept out of the `-l` log.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use qmp_client::{Client, Object, Reply, Request};
use serde_json::Value;

use crate::facts::Facts;
use crate::schema::Schema;
use crate::wording::client_error;

/// How long the cheap look-up (`query-commands`) may take before the
/// checks are given up for the session: a server that does not answer it
/// at once is busy or hung, and the user's command must not wait on it.
pub(crate) const QUICK_LOOKUP: Duration = Duration::from_secs(2);

/// How long fetching the whole schema may take (it is large: slow links).
pub const SCHEMA_LOOKUP: Duration = Duration::from_secs(10);

/// What is known about the server, fetched once.
#[derive(Default)]
pub struct SchemaStore {
    schema: OnceLock<Schema>,
    /// `None` inside: no facts to be had (no schema, or a guest agent).
    facts: OnceLock<Option<Facts>>,
    /// Serialises fetches, so that two threads never fetch twice.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for SchemaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaStore")
            .field("schema", &self.schema.get().is_some())
            .field("facts", &self.facts.get().map(Option::is_some))
            .finish()
    }
}

/// Send `msg` kept out of the `-l` log (the shell asks, not the user) and
/// wait for its reply.
pub(crate) fn call_unlogged(
    client: &Client,
    msg: Object,
    timeout: Option<Duration>,
) -> Result<Reply, qmp_client::Error> {
    client
        .submit(Request::new(msg).unlogged())
        .and_then(|p| p.wait(timeout))
}

fn call(client: &Client, command: &str, timeout: Option<Duration>) -> Result<Value, String> {
    let reply = call_unlogged(client, qmp_client::command(command, None), timeout)
        .map_err(|e| client_error(&e))?;
    match reply.ret() {
        Some(ret) => Ok(ret.clone()),
        None => Err(reply
            .error_desc()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{command} failed"))),
    }
}

impl SchemaStore {
    /// An empty store.
    pub fn new() -> SchemaStore {
        SchemaStore::default()
    }

    /// The schema, if fetched already.
    pub(crate) fn schema_if_known(&self) -> Option<&Schema> {
        self.schema.get()
    }

    /// The schema, fetched now if need be.
    pub fn schema(&self, client: &Client, timeout: Option<Duration>) -> Result<&Schema, String> {
        if let Some(s) = self.schema.get() {
            return Ok(s);
        }
        let _guard = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.schema.get() {
            return Ok(s);
        }
        let ret = call(client, "query-qmp-schema", timeout)?;
        if !ret.is_array() {
            return Err("query-qmp-schema returned no list".to_owned());
        }
        Ok(self.schema.get_or_init(|| Schema::from_value(&ret)))
    }

    /// The facts, from the schema if fetched, else from the disk cache,
    /// else from the schema fetched now (and then cached). `None` when the
    /// server has no schema to give, or does not answer in time
    /// (`QUICK_LOOKUP`, [`SCHEMA_LOOKUP`]): then not asked again.
    pub fn facts(&self, client: &Client) -> Option<&Facts> {
        self.facts
            .get_or_init(|| {
                if let Some(schema) = self.schema.get() {
                    return Some(Facts::from_schema(schema));
                }
                let path = cache_path(client, Some(QUICK_LOOKUP))?;
                if let Some(facts) = read_cache(&path) {
                    return Some(facts);
                }
                let facts = Facts::from_schema(self.schema(client, Some(SCHEMA_LOOKUP)).ok()?);
                write_cache(&path, &facts);
                Some(facts)
            })
            .as_ref()
    }
}

/// FNV-1a, 64 bits: a stable hash for file names.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cache directory, if there is a home for it.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("qmp-shell"))
}

/// Where the facts of this server are cached: the key is the greeting's
/// version and package and the server's command list.
fn cache_path(client: &Client, timeout: Option<Duration>) -> Option<PathBuf> {
    let greeting = client.greeting()?;
    let version = greeting.body.get("QMP")?.get("version")?;
    let commands = call(client, "query-commands", timeout).ok()?;
    let mut names: Vec<&str> = commands
        .as_array()?
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    names.sort_unstable();
    let key = format!(
        "{}\n{}",
        serde_json::to_string(version).ok()?,
        names.join(",")
    );
    let (major, minor, micro) = greeting.version().unwrap_or_default();
    Some(cache_dir()?.join(format!(
        "facts-{major}.{minor}.{micro}-{:016x}.json",
        fnv64(key.as_bytes())
    )))
}

fn read_cache(path: &PathBuf) -> Option<Facts> {
    let text = fs::read(path).ok()?;
    Facts::from_json(&serde_json::from_slice(&text).ok()?)
}

/// Write the cache file next to its final name, then rename it: readers
/// see a whole file or none. Failures are silent (the cache is optional).
fn write_cache(path: &PathBuf, facts: &Facts) {
    let Some(dir) = path.parent() else {
        return;
    };
    if fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .is_err()
    {
        return;
    }
    let tmp = dir.join(format!(".facts-{}.tmp", std::process::id()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp);
    let Ok(mut file) = file else {
        return;
    };
    let text = serde_json::to_vec(&facts.to_json()).unwrap_or_default();
    if file.write_all(&text).is_ok() && fs::rename(&tmp, path).is_ok() {
        return;
    }
    let _ = fs::remove_file(&tmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
