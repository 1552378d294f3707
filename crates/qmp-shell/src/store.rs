//! The server's schema and the facts derived from it, fetched at most once
//! per session and shared (completion, `help`, deprecation warnings, `/oob`
//! checks), with the facts kept on disk between sessions.
//!
//! Fetching the schema costs QEMU about 25 ms, more than a whole
//! one-command session; the facts the safety net needs are a few
//! kilobytes. So they are cached in `$XDG_CACHE_HOME/qmp-shell/` (else
//! `~/.cache/qmp-shell/`, a 0700 directory, files 0600), one file per QEMU
//! version and package as the greeting tells them, holding the facts of up
//! to [`MAX_BUILDS`] builds of that version, each under the fingerprint of
//! its command list (`query-commands`): a storage daemon and the emulator
//! of the same version, or two builds of one source tree, differ there.
//!
//! No question goes to the server before the user's first command:
//!
//! * [`SchemaStore::marks`] (deprecation warnings, `/oob`) answers from the
//!   cache file of the greeting's version and package, as read from disk.
//!   What QEMU marks deprecated or unstable, and what may run out of band,
//!   is written in its QAPI schema, the same for every build of a source
//!   tree; builds differ in which commands they have. From the second
//!   command on, the command list is checked in the background
//!   ([`SchemaStore::marks`] sends `query-commands` without waiting for
//!   it); when it is another build's, the exact facts are used from then
//!   on (another entry of the file, or the schema fetched and cached).
//! * [`SchemaStore::facts`] (`/wait`, which must know which events this
//!   very server has) makes sure: the command list, and the schema when no
//!   cached build has that list.
//! * With nothing cached for the version (a cold cache),
//!   [`SchemaStore::marks_now`] says so without waiting, so that a caller
//!   can send the command first and start the fetch with
//!   [`SchemaStore::start_fetch`]: the warnings are then worked out when
//!   [`SchemaStore::poll_fetch`] (or the blocking [`SchemaStore::marks`])
//!   has the facts, before the command's reply is printed.
//!
//! The requests the shell makes on its own are kept out of the `-l` log.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use qmp_client::{Client, Greeting, Object, Pending, Reply, Request};
use serde_json::{json, Value};

use crate::facts::Facts;
use crate::schema::Schema;
use crate::wording::client_error;

/// How long the cheap look-up (`query-commands`) may take before the
/// checks are given up for the session: a server that does not answer it
/// at once is busy or hung, and the user's command must not wait on it.
pub(crate) const QUICK_LOOKUP: Duration = Duration::from_secs(2);

/// How long fetching the whole schema may take (it is large: slow links).
pub const SCHEMA_LOOKUP: Duration = Duration::from_secs(10);

/// Builds of one QEMU version and package whose facts a cache file keeps
/// (the most recently used first).
pub const MAX_BUILDS: usize = 4;

/// The version of the cache file's JSON form; another version is ignored.
const FORMAT: u64 = 3;

/// What is known about the server, fetched once.
#[derive(Default)]
pub struct SchemaStore {
    schema: OnceLock<Schema>,
    /// Facts known to be this server's: from its schema, or from a cached
    /// build with its command list. `None` inside: no facts to be had (no
    /// schema, or no answer in time).
    exact: OnceLock<Option<Facts>>,
    /// The cache file of the server's version and package, as read.
    cached: OnceLock<Cached>,
    /// The check of the command list (`query-commands`).
    check: Mutex<Lookup>,
    /// A fetch started by [`SchemaStore::start_fetch`].
    fetch: Mutex<Option<Fetch>>,
    /// Calls of [`SchemaStore::marks`] so far: the check goes out on the
    /// second, when the first command is on the wire.
    asked: AtomicUsize,
    /// Serialises fetches, so that two threads never fetch twice.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for SchemaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaStore")
            .field("schema", &self.schema.get().is_some())
            .field("facts", &self.exact.get().map(Option::is_some))
            .field("cached", &self.cached.get().map(|c| c.builds.len()))
            .finish()
    }
}

/// What [`SchemaStore::marks_now`] found.
#[derive(Debug)]
pub enum Marks<'a> {
    /// The facts to warn with.
    Ready(&'a Facts),
    /// There are none to be had (no schema, no greeting, no answer).
    Unavailable,
    /// Nothing cached for this server's version and package: the facts must
    /// be fetched ([`SchemaStore::start_fetch`], [`SchemaStore::marks`]).
    Cold,
}

/// The cache file of one QEMU version and package.
#[derive(Debug, Default)]
struct Cached {
    /// `None`: no cache directory, or no greeting to key it by.
    path: Option<PathBuf>,
    builds: Vec<Build>,
}

/// The facts of one build, under the fingerprint of its command list.
#[derive(Debug, Clone)]
struct Build {
    commands: u64,
    facts: Facts,
}

/// A look-up in the background.
#[derive(Debug, Default)]
enum Lookup {
    /// Not asked.
    #[default]
    Idle,
    /// Asked; the reply is awaited.
    Asked(Pending),
    /// Answered: the fingerprint of the command list (`None`: no answer).
    Done(Option<u64>),
}

/// The requests of a fetch in flight.
#[derive(Debug)]
struct Fetch {
    commands: Answer,
    /// `None`: another thread is fetching the schema (completion).
    schema: Option<Answer>,
    /// When it was asked: [`SchemaStore::poll_fetch`] waits as long as
    /// the blocking look-ups would.
    since: Instant,
}

/// A request the shell made on its own, until its reply is used.
#[derive(Debug)]
enum Answer {
    Awaited(Pending),
    Got(Result<Reply, qmp_client::Error>),
}

impl Answer {
    /// Whether the reply (or the error that ended the wait) is here.
    fn arrived(&mut self) -> bool {
        if let Answer::Awaited(pending) = self {
            if let Some(result) = pending.try_take() {
                *self = Answer::Got(result);
            }
        }
        matches!(self, Answer::Got(_))
    }

    /// The reply, waiting for it at most `timeout`.
    fn wait(self, timeout: Duration) -> Result<Reply, qmp_client::Error> {
        match self {
            Answer::Awaited(pending) => pending.wait(Some(timeout)),
            Answer::Got(result) => result,
        }
    }
}

/// Send `msg` kept out of the `-l` log (the shell asks, not the user) and
/// wait for its reply.
pub(crate) fn call_unlogged(
    client: &Client,
    msg: Object,
    timeout: Option<Duration>,
) -> Result<Reply, qmp_client::Error> {
    ask(client, msg).and_then(|p| p.wait(timeout))
}

/// Send `msg` kept out of the `-l` log, without waiting.
fn ask(client: &Client, msg: Object) -> Result<Pending, qmp_client::Error> {
    client.submit(Request::new(msg).unlogged())
}

/// Send command `command` (no arguments) kept out of the `-l` log.
fn ask_command(client: &Client, command: &str) -> Option<Pending> {
    ask(client, qmp_client::command(command, None)).ok()
}

/// The `"return"` of the reply to `command`, or why there is none.
fn returned(command: &str, result: Result<Reply, qmp_client::Error>) -> Result<Value, String> {
    let reply = result.map_err(|e| client_error(&e))?;
    match reply.body.get("return") {
        Some(_) => {
            let mut body = reply.body;
            Ok(body.shift_remove("return").unwrap_or_default())
        }
        None => Err(reply
            .error_desc()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{command} failed"))),
    }
}

fn call(client: &Client, command: &str, timeout: Option<Duration>) -> Result<Value, String> {
    returned(
        command,
        call_unlogged(client, qmp_client::command(command, None), timeout),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let _guard = lock(&self.fetching);
        if let Some(s) = self.schema.get() {
            return Ok(s);
        }
        let ret = call(client, "query-qmp-schema", timeout)?;
        self.keep_schema(&ret)
    }

    /// Build the schema from the `"return"` of `query-qmp-schema` and keep
    /// it (the caller holds `fetching`).
    fn keep_schema(&self, ret: &Value) -> Result<&Schema, String> {
        if !ret.is_array() {
            return Err("query-qmp-schema returned no list".to_owned());
        }
        Ok(self.schema.get_or_init(|| Schema::from_value(ret)))
    }

    /// Ask for the schema without waiting, unless it is known or another
    /// thread is fetching it (then [`SchemaStore::facts_of`] waits for that
    /// fetch).
    fn ask_schema(&self, client: &Client) -> Option<Answer> {
        let _free = self.fetching.try_lock().ok()?;
        if self.schema.get().is_some() {
            return None;
        }
        ask_command(client, "query-qmp-schema").map(Answer::Awaited)
    }

    /// The facts to warn with (deprecation warnings, `/oob`), without a
    /// question to the server when the cache has them: see the module
    /// documentation. `None` when the server has no schema to give, or does
    /// not answer in time (`QUICK_LOOKUP`, [`SCHEMA_LOOKUP`]): then not
    /// asked again. With a cold cache this waits for the fetch (started
    /// here unless [`SchemaStore::start_fetch`] did); call it after the
    /// command it is for was sent, so that no round trip comes before it.
    pub fn marks(&self, client: &Client) -> Option<&Facts> {
        match self.marks_now(client) {
            Marks::Ready(facts) => Some(facts),
            Marks::Unavailable => None,
            Marks::Cold => self.facts(client),
        }
    }

    /// [`SchemaStore::marks`] without waiting for the server: the facts,
    /// or that there are none, or that nothing is cached yet
    /// ([`Marks::Cold`]). Reads the disk cache once; from its second call
    /// on it sends the command-list check without waiting for it.
    pub fn marks_now(&self, client: &Client) -> Marks<'_> {
        if let Some(exact) = self.exact.get() {
            return exact.as_ref().map_or(Marks::Unavailable, Marks::Ready);
        }
        if self.schema.get().is_some() {
            return self.facts(client).map_or(Marks::Unavailable, Marks::Ready);
        }
        let Some(greeting) = client.greeting() else {
            return Marks::Unavailable;
        };
        let cached = self.cached.get_or_init(|| Cached::read(greeting));
        let Some(first) = cached.builds.first() else {
            return Marks::Cold;
        };
        if self.asked.fetch_add(1, Ordering::Relaxed) == 1 {
            let mut check = lock(&self.check);
            if matches!(*check, Lookup::Idle) {
                *check =
                    ask_command(client, "query-commands").map_or(Lookup::Done(None), Lookup::Asked);
            }
        }
        if let Some(commands) = self.checked() {
            if commands != first.commands {
                // Another build of this version: be exact from now on.
                return self.facts(client).map_or(Marks::Unavailable, Marks::Ready);
            }
        }
        Marks::Ready(&first.facts)
    }

    /// The fingerprint of the command list, if the check was answered
    /// (without waiting).
    fn checked(&self) -> Option<u64> {
        let mut check = lock(&self.check);
        if let Lookup::Asked(pending) = &mut *check {
            if let Some(result) = pending.try_take() {
                *check = Lookup::Done(fingerprint(result).ok());
            }
        }
        match *check {
            Lookup::Done(commands) => commands,
            _ => None,
        }
    }

    /// Start fetching the facts without waiting (`query-commands` and
    /// `query-qmp-schema`, pipelined, out of the log), for a cold cache
    /// ([`Marks::Cold`]): call it right after sending the user's command,
    /// then [`SchemaStore::poll_fetch`] until it answers, or
    /// [`SchemaStore::marks`] to wait. Does nothing if the facts are known
    /// or a fetch is under way.
    pub fn start_fetch(&self, client: &Client) {
        if self.exact.get().is_some() {
            return;
        }
        let mut fetch = lock(&self.fetch);
        if fetch.is_some() {
            return;
        }
        let commands = {
            let mut check = lock(&self.check);
            match std::mem::take(&mut *check) {
                Lookup::Asked(pending) => Some(pending),
                other => {
                    *check = other;
                    ask_command(client, "query-commands")
                }
            }
        };
        if let Some(commands) = commands {
            *fetch = Some(Fetch {
                commands: Answer::Awaited(commands),
                schema: self.ask_schema(client),
                since: Instant::now(),
            });
        }
    }

    /// The facts once the fetch that [`SchemaStore::start_fetch`] started
    /// (here, if nothing did) was answered: `None` while it is under way,
    /// `Some(None)` when there are none to be had, or when the server did
    /// not answer in the time the blocking look-ups give it (`QUICK_LOOKUP`
    /// for the command list, [`SCHEMA_LOOKUP`] more for the schema): then
    /// not asked again. Never waits for the server (a fetch that could not
    /// even be sent gives `Some(None)`).
    pub fn poll_fetch(&self, client: &Client) -> Option<Option<&Facts>> {
        if let Some(exact) = self.exact.get() {
            return Some(exact.as_ref());
        }
        if lock(&self.fetch).is_none() {
            self.start_fetch(client);
        }
        {
            let mut fetch = lock(&self.fetch);
            if let Some(f) = fetch.as_mut() {
                let commands = f.commands.arrived();
                let schema = match &mut f.schema {
                    Some(answer) => answer.arrived(),
                    None => self.schema.get().is_some() || self.fetching.try_lock().is_ok(),
                };
                if !(commands && schema) {
                    // As long as the look-ups would wait: the command list
                    // first, then the schema.
                    let most = if commands {
                        QUICK_LOOKUP.saturating_add(SCHEMA_LOOKUP)
                    } else {
                        QUICK_LOOKUP
                    };
                    if f.since.elapsed() < most {
                        return None;
                    }
                    *fetch = None;
                    drop(fetch);
                    self.give_up_fetch();
                    return Some(None);
                }
            }
        }
        Some(self.facts(client))
    }

    /// Stop waiting for the fetch under way, as a look-up that timed out
    /// does: no facts for this session, and nothing asked again.
    pub fn give_up_fetch(&self) {
        let _ = self.exact.set(None);
        lock(&self.fetch).take();
    }

    /// The facts of this very server (`/wait` must know its events): the
    /// cached facts of its build if its command list is cached, else from
    /// its schema (fetched now, and cached). `None` when the server has no
    /// schema to give, or does not answer in time (`QUICK_LOOKUP`,
    /// [`SCHEMA_LOOKUP`]): then not asked again.
    pub fn facts(&self, client: &Client) -> Option<&Facts> {
        self.exact.get_or_init(|| self.exact_facts(client)).as_ref()
    }

    fn exact_facts(&self, client: &Client) -> Option<Facts> {
        if let Some(schema) = self.schema.get() {
            return Some(Facts::from_schema(schema));
        }
        let greeting = client.greeting()?;
        let cached = self.cached.get_or_init(|| Cached::read(greeting));
        // What is in flight already, else both questions at once when
        // nothing is cached (one round trip), else the command list first.
        let fetch = lock(&self.fetch).take();
        let (commands, schema) = match fetch {
            Some(f) => (Some(f.commands), f.schema),
            None => {
                let commands = match std::mem::take(&mut *lock(&self.check)) {
                    Lookup::Asked(pending) => Some(Answer::Awaited(pending)),
                    Lookup::Done(Some(commands)) => {
                        return self.facts_of(client, cached, commands, None)
                    }
                    Lookup::Done(None) => return None,
                    Lookup::Idle => ask_command(client, "query-commands").map(Answer::Awaited),
                };
                let schema = if cached.builds.is_empty() {
                    self.ask_schema(client)
                } else {
                    None
                };
                (commands, schema)
            }
        };
        let commands = fingerprint(commands?.wait(QUICK_LOOKUP)).ok()?;
        self.facts_of(client, cached, commands, schema)
    }

    /// The facts of the build with command list `commands`: cached, or from
    /// the schema (its reply `schema` if asked already), then cached.
    fn facts_of(
        &self,
        client: &Client,
        cached: &Cached,
        commands: u64,
        schema: Option<Answer>,
    ) -> Option<Facts> {
        if let Some(i) = cached.builds.iter().position(|b| b.commands == commands) {
            let build = cached.builds[i].clone();
            if i > 0 {
                cached.write(&build);
            }
            return Some(build.facts);
        }
        let facts = {
            let _guard = lock(&self.fetching);
            let schema = match self.schema.get() {
                Some(schema) => schema,
                None => {
                    let result = match schema {
                        Some(answer) => answer.wait(SCHEMA_LOOKUP),
                        None => call_unlogged(
                            client,
                            qmp_client::command("query-qmp-schema", None),
                            Some(SCHEMA_LOOKUP),
                        ),
                    };
                    let ret = returned("query-qmp-schema", result).ok()?;
                    self.keep_schema(&ret).ok()?
                }
            };
            Facts::from_schema(schema)
        };
        let build = Build { commands, facts };
        cached.write(&build);
        Some(build.facts)
    }
}

/// The fingerprint of a `query-commands` reply: a hash of the sorted names.
fn fingerprint(result: Result<Reply, qmp_client::Error>) -> Result<u64, String> {
    let commands = returned("query-commands", result)?;
    let mut names: Vec<&str> = commands
        .as_array()
        .ok_or("query-commands returned no list")?
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    names.sort_unstable();
    Ok(fnv64(names.join(",").as_bytes()))
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

/// Where the facts of a server with this greeting are cached: the key is
/// the version and package it announces.
fn cache_path(greeting: &Greeting) -> Option<PathBuf> {
    let version = greeting.body.get("QMP")?.get("version")?;
    let key = serde_json::to_string(version).ok()?;
    let (major, minor, micro) = greeting.version().unwrap_or_default();
    Some(cache_dir()?.join(format!(
        "facts-{major}.{minor}.{micro}-{:016x}.json",
        fnv64(key.as_bytes())
    )))
}

/// A cache file read ahead by [`prefetch`], until a store takes it.
static PREFETCHED: Mutex<Option<Cached>> = Mutex::new(None);

/// Read the cache file for `greeting` now, for the store of the session
/// that starts: while the capabilities negotiation is on its way, rather
/// than before the first command is sent.
pub fn prefetch(greeting: &Greeting) {
    let cached = Cached::read_file(cache_path(greeting));
    *PREFETCHED.lock().unwrap_or_else(|e| e.into_inner()) = Some(cached);
}

impl Cached {
    /// The cache file for `greeting`, read (empty when there is none, or it
    /// is damaged or of another format), or as [`prefetch`] read it.
    fn read(greeting: &Greeting) -> Cached {
        let path = cache_path(greeting);
        let ahead = PREFETCHED.lock().unwrap_or_else(|e| e.into_inner()).take();
        match ahead {
            Some(cached) if cached.path == path => cached,
            _ => Cached::read_file(path),
        }
    }

    /// The cache file at `path` (none: no cache), read.
    fn read_file(path: Option<PathBuf>) -> Cached {
        let builds = path
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|text| serde_json::from_slice::<CacheJson>(&text).ok())
            .and_then(CacheJson::into_builds)
            .unwrap_or_default();
        Cached { path, builds }
    }

    /// Write the file with `build` first, then the other builds read (the
    /// file may have changed meanwhile: the last writer wins, and a build
    /// lost so is fetched again when met).
    fn write(&self, build: &Build) {
        let Some(path) = &self.path else {
            return;
        };
        let builds: Vec<Value> = std::iter::once(build)
            .chain(self.builds.iter().filter(|b| b.commands != build.commands))
            .take(MAX_BUILDS)
            .map(
                |b| json!({"commands": format!("{:016x}", b.commands), "facts": b.facts.to_json()}),
            )
            .collect();
        let text =
            serde_json::to_vec(&json!({"format": FORMAT, "builds": builds})).unwrap_or_default();
        write_file(path, &text);
    }
}

/// The builds of a cache file's JSON form; `None` for anything else (an
/// older format, a damaged file).
#[cfg(test)]
fn builds_from_json(v: &Value) -> Option<Vec<Build>> {
    use serde::Deserialize;
    CacheJson::deserialize(v).ok()?.into_builds()
}

/// A cache file as read: straight into the facts, with no JSON tree in
/// between (a one-command session reads it at every start).
#[derive(serde::Deserialize)]
struct CacheJson {
    format: u64,
    builds: Vec<BuildJson>,
}

/// One build of a cache file as read.
#[derive(serde::Deserialize)]
struct BuildJson {
    /// The fingerprint of its command list, in hexadecimal.
    commands: String,
    facts: crate::facts::FactsJson,
}

impl CacheJson {
    /// The builds; `None` for another format or a damaged entry.
    fn into_builds(self) -> Option<Vec<Build>> {
        if self.format != FORMAT {
            return None;
        }
        self.builds
            .into_iter()
            .take(MAX_BUILDS)
            .map(|b| {
                Some(Build {
                    commands: u64::from_str_radix(&b.commands, 16).ok()?,
                    facts: b.facts.into_facts()?,
                })
            })
            .collect()
    }
}

/// Write the file next to its final name, then rename it: readers see a
/// whole file or none. Failures are silent (the cache is optional).
fn write_file(path: &Path, text: &[u8]) {
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
    if file.write_all(text).is_ok() && fs::rename(&tmp, path).is_ok() {
        return;
    }
    let _ = fs::remove_file(&tmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(micro: u64, package: &str) -> Greeting {
        let body = json!({"QMP": {"version": {"qemu": {"micro": micro, "minor": 2, "major": 7},
            "package": package}, "capabilities": ["oob"]}});
        Greeting {
            body: body.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn the_file_is_keyed_by_version_and_package() {
        let name = |g: &Greeting| cache_path(g).map(|p| p.file_name().unwrap().to_owned());
        let a = name(&greeting(22, "Debian 1:7.2+dfsg-7"));
        assert!(a
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("facts-7.2.22-"));
        assert_eq!(a, name(&greeting(22, "Debian 1:7.2+dfsg-7")));
        assert_ne!(a, name(&greeting(22, "v7.2.0-1-gabcdef-dirty")));
        assert_ne!(a, name(&greeting(21, "Debian 1:7.2+dfsg-7")));
    }

    #[test]
    fn builds_are_kept_most_recent_first_and_at_most_max() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp-shell").join("facts.json");
        let mut cached = Cached {
            path: Some(path.clone()),
            builds: Vec::new(),
        };
        let build = |commands| Build {
            commands,
            facts: Facts::default(),
        };
        for commands in 1..=(MAX_BUILDS as u64 + 2) {
            cached.write(&build(commands));
            let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            cached.builds = builds_from_json(&v).unwrap();
        }
        let order = |c: &Cached| c.builds.iter().map(|b| b.commands).collect::<Vec<_>>();
        assert_eq!(order(&cached), [6, 5, 4, 3]);
        // A build met again comes first, once.
        cached.write(&build(4));
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        cached.builds = builds_from_json(&v).unwrap();
        assert_eq!(order(&cached), [4, 6, 5, 3]);
        // Private, and another format or a damaged file is no cache.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(builds_from_json(&json!({"format": 1, "builds": []})).is_none());
        assert!(builds_from_json(&json!({"format": 3, "builds": [{"commands": "x"}]})).is_none());
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
