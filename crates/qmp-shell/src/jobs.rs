//! `/jobs`: what follows block jobs (`query-jobs`) and a migration
//! (`query-migrate`) until none is running.
//!
//! [`Progress`] is pure: fed the events and the two replies of each poll,
//! it tells what changed (one JSON object per job whose status or progress
//! moved) and whether anything still runs. `Known` keeps, for the whole
//! session, the last real figures (type, progress) of every job, for a job
//! that a `/jobs` learns of from events only. `Bars` draws progress bars
//! on a terminal with indicatif.
//!
//! Which jobs a `/jobs` shows: those `query-jobs` lists while it runs,
//! those whose events come after it started, and those created since the
//! previous command was sent (a job that command started and that ended at
//! once); not those that ended before. The same for the migration:
//! `query-migrate` reports the last one for ever, so it is shown only when
//! it runs while `/jobs` does, or its events (with the `events` migration
//! capability) say it started since the previous command or changed
//! status since `/jobs` started.
//!
//! A job runs on its own while its status is `created`, `running`,
//! `waiting` or `aborting`; `ready`, `standby`, `paused` and `pending`
//! wait for a command (`job-complete`, `job-resume`, `job-finalize`), and
//! `concluded` and `null` are done, so none of those keep `/jobs` waiting.
//! A job that `query-jobs` no longer lists was dismissed: its status is
//! `null`. A migration runs in every status but `none`, `completed`,
//! `failed` and `cancelled` (the statuses of `query-migrate`); its progress
//! is the part of guest RAM no longer remaining (`ram.total -
//! ram.remaining`: zero pages are never transferred, so the bytes
//! transferred say little), so a completed migration is at 100%.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use qmp_client::Object;
use serde_json::{json, Value};

/// How often jobs are polled (sooner when a job event arrives).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Job statuses in which a job moves on its own.
const JOB_RUNNING: [&str; 4] = ["created", "running", "waiting", "aborting"];

/// Migration statuses in which no migration is going on.
const MIGRATION_IDLE: [&str; 4] = ["none", "completed", "failed", "cancelled"];

/// Events that tell about a job or the migration (a poll follows at once).
pub(crate) const JOB_EVENTS: [&str; 6] = [
    "JOB_STATUS_CHANGE",
    "MIGRATION",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_READY",
    "BLOCK_JOB_ERROR",
];

/// The id of the migration among the jobs.
const MIGRATION: &str = "migration";

/// Jobs whose figures [`Known`] keeps at most.
const MAX_KNOWN: usize = 4096;

/// One job (or the migration) as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id, or `migration`.
    pub(crate) id: String,
    /// `mirror`, `backup`, ..., or `migration`; `None` while unknown (a
    /// job known from its status events only).
    pub(crate) kind: Option<String>,
    /// Its status.
    pub(crate) status: String,
    /// Progress so far (bytes, for block jobs and migration), when known.
    pub(crate) current: Option<u64>,
    /// Progress when done (may grow while a job runs), when known.
    pub(crate) total: Option<u64>,
    /// The error, for a job that failed.
    pub(crate) error: Option<String>,
}

impl Job {
    /// A job known only by its id and status; its figures come from `known`.
    fn from_status(id: &str, status: &str, known: &Known) -> Job {
        let f = known.get(id);
        Job {
            id: id.to_owned(),
            kind: f.kind,
            status: status.to_owned(),
            current: f.current,
            total: f.total,
            error: None,
        }
    }

    /// Whether this is the migration.
    pub(crate) fn is_migration(&self) -> bool {
        self.kind.as_deref() == Some(MIGRATION)
    }

    /// Whether it moves on its own.
    pub(crate) fn running(&self) -> bool {
        if self.is_migration() {
            !MIGRATION_IDLE.contains(&self.status.as_str())
        } else {
            JOB_RUNNING.contains(&self.status.as_str())
        }
    }

    /// Percent done, when there is a total.
    pub(crate) fn percent(&self) -> Option<u64> {
        match (self.current, self.total) {
            (Some(c), Some(t)) if t > 0 => Some((c.min(t) * 100) / t),
            _ => None,
        }
    }

    /// What a bar is labelled with: `mirror m0`, `migration`.
    pub(crate) fn label(&self) -> String {
        match &self.kind {
            _ if self.is_migration() => MIGRATION.to_owned(),
            Some(kind) => format!("{kind} {}", self.id),
            None => self.id.clone(),
        }
    }

    /// The JSON line printed for it (`null` for what is not known).
    pub(crate) fn to_json(&self) -> Object {
        let mut obj = Object::new();
        obj.insert("job".into(), json!(self.id));
        obj.insert("type".into(), json!(self.kind));
        obj.insert("status".into(), json!(self.status));
        obj.insert("current-progress".into(), json!(self.current));
        obj.insert("total-progress".into(), json!(self.total));
        if let Some(p) = self.percent() {
            obj.insert("percent".into(), json!(p));
        }
        if let Some(e) = &self.error {
            obj.insert("error".into(), json!(e));
        }
        obj
    }

    /// What a change line is printed for.
    fn shown(&self) -> Shown {
        (self.status.clone(), self.percent(), self.error.clone())
    }
}

/// Status, percent and error: a job gets a line when one of them changes.
type Shown = (String, Option<u64>, Option<String>);

/// A job's figures: its type and progress.
#[derive(Debug, Clone, Default, PartialEq)]
struct Figures {
    kind: Option<String>,
    current: Option<u64>,
    total: Option<u64>,
}

/// The last real figures of every job the session saw (from polls and
/// from the events that carry them), for a job that a `/jobs` learns of
/// only from its status events (a job that ended before it could be
/// polled).
#[derive(Debug, Default)]
pub(crate) struct Known {
    jobs: HashMap<String, Figures>,
}

impl Known {
    /// Take an event: `BLOCK_JOB_COMPLETED`, `BLOCK_JOB_CANCELLED` and
    /// `BLOCK_JOB_READY` carry a job's type and figures; a job `created`
    /// is a new job, whatever an old one of that id did.
    pub(crate) fn event(&mut self, name: &str, data: Option<&Value>) {
        let Some(data) = data else { return };
        match name {
            "JOB_STATUS_CHANGE"
                if data.get("status").and_then(Value::as_str) == Some("created") =>
            {
                if let Some(id) = data.get("id").and_then(Value::as_str) {
                    self.jobs.remove(id);
                }
            }
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" | "BLOCK_JOB_READY" => {
                let Some(id) = data.get("device").and_then(Value::as_str) else {
                    return;
                };
                self.store(
                    id,
                    Figures {
                        kind: data.get("type").and_then(Value::as_str).map(str::to_owned),
                        current: data.get("offset").and_then(Value::as_u64),
                        total: data.get("len").and_then(Value::as_u64),
                    },
                );
            }
            _ => {}
        }
    }

    /// Keep a job's figures as a poll gave them.
    pub(crate) fn remember(&mut self, job: &Job) {
        if job.is_migration() || job.kind.is_none() {
            return;
        }
        self.store(
            &job.id,
            Figures {
                kind: job.kind.clone(),
                current: job.current,
                total: job.total,
            },
        );
    }

    fn store(&mut self, id: &str, figures: Figures) {
        if self.jobs.len() >= MAX_KNOWN && !self.jobs.contains_key(id) {
            self.jobs.clear();
        }
        self.jobs.insert(id.to_owned(), figures);
    }

    fn get(&self, id: &str) -> Figures {
        self.jobs.get(id).cloned().unwrap_or_default()
    }
}

fn u64_field(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Jobs from a `query-jobs` return value.
fn parse_jobs(ret: &Value) -> Vec<Job> {
    ret.as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| {
            Some(Job {
                id: j.get("id")?.as_str()?.to_owned(),
                kind: j.get("type").and_then(Value::as_str).map(str::to_owned),
                status: j.get("status")?.as_str()?.to_owned(),
                current: u64_field(j, "current-progress"),
                total: u64_field(j, "total-progress"),
                error: j.get("error").and_then(Value::as_str).map(str::to_owned),
            })
        })
        .collect()
}

/// The migration from a `query-migrate` return value (`{}` when none ever
/// ran). Its progress is the part of RAM not remaining.
fn parse_migration(ret: &Value) -> Option<Job> {
    let status = ret.get("status")?.as_str()?.to_owned();
    let ram = ret.get("ram");
    let total = ram.and_then(|r| u64_field(r, "total"));
    let remaining = ram.and_then(|r| u64_field(r, "remaining"));
    Some(Job {
        id: MIGRATION.to_owned(),
        kind: Some(MIGRATION.to_owned()),
        current: match (total, remaining) {
            (Some(t), Some(r)) => Some(t.saturating_sub(r)),
            _ => None,
        },
        total,
        status,
        error: ret
            .get("error-desc")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The jobs and the migration one `/jobs` follows: what the polls and the
/// events said.
#[derive(Debug, Default)]
pub struct Progress {
    jobs: BTreeMap<String, Job>,
    /// The migration, once it is one to show.
    migration: Option<Job>,
    /// What the last line printed for each job said.
    printed: HashMap<(bool, String), Shown>,
}

impl Progress {
    /// A fresh follower.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Take an event. `live`: it came after `/jobs` started (else it came
    /// since the previous command was sent, before `/jobs` started: only a
    /// job created, or a migration set up, in that time is taken up from
    /// it). `known` gives the figures of a job taken up from an event.
    pub(crate) fn event(&mut self, name: &str, data: Option<&Value>, live: bool, known: &Known) {
        let Some(data) = data else { return };
        let text = |key: &str| data.get(key).and_then(Value::as_str);
        match name {
            "JOB_STATUS_CHANGE" => {
                let (Some(id), Some(status)) = (text("id"), text("status")) else {
                    return;
                };
                match self.jobs.get_mut(id) {
                    Some(job) => job.status = status.to_owned(),
                    None if live || status == "created" => {
                        let job = Job::from_status(id, status, known);
                        self.jobs.insert(id.to_owned(), job);
                    }
                    None => {}
                }
            }
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" | "BLOCK_JOB_READY" => {
                let Some(job) = text("device").and_then(|id| self.jobs.get_mut(id)) else {
                    return;
                };
                if let Some(kind) = text("type") {
                    job.kind = Some(kind.to_owned());
                }
                job.current = u64_field(data, "offset").or(job.current);
                job.total = u64_field(data, "len").or(job.total);
                if let Some(e) = text("error") {
                    job.error = Some(e.to_owned());
                }
            }
            "MIGRATION" => {
                let Some(status) = text("status") else { return };
                match &mut self.migration {
                    Some(m) => m.status = status.to_owned(),
                    None if live || status == "setup" => {
                        self.migration = Some(Job {
                            id: MIGRATION.to_owned(),
                            kind: Some(MIGRATION.to_owned()),
                            status: status.to_owned(),
                            current: None,
                            total: None,
                            error: None,
                        })
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Take a poll's replies (`None`: that query failed or does not exist,
    /// as on a storage daemon without migration). Returns the jobs whose
    /// status, percentage or error changed since the last line printed for
    /// them (or that were never printed), jobs in id order, then the
    /// migration.
    pub fn update(&mut self, jobs: Option<&Value>, migrate: Option<&Value>) -> Vec<Job> {
        if let Some(ret) = jobs {
            let now = parse_jobs(ret);
            // Gone from query-jobs: dismissed.
            for (id, job) in self.jobs.iter_mut() {
                if !now.iter().any(|j| &j.id == id) {
                    job.status = "null".to_owned();
                }
            }
            for job in now {
                self.jobs.insert(job.id.clone(), job);
            }
        }
        if let Some(m) = migrate.and_then(parse_migration) {
            if self.migration.is_some() || m.running() {
                self.migration = Some(m);
            }
        }
        let mut changed = Vec::new();
        for job in self.jobs.values().chain(self.migration.iter()) {
            let key = (job.is_migration(), job.id.clone());
            let shown = job.shown();
            if self.printed.get(&key) != Some(&shown) {
                changed.push(job.clone());
                self.printed.insert(key, shown);
            }
        }
        changed
    }

    /// Whether a job or the migration still moves on its own.
    pub(crate) fn running(&self) -> bool {
        self.jobs().any(Job::running)
    }

    /// Every job, then the migration, as last seen.
    pub(crate) fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values().chain(self.migration.iter())
    }

    /// The final line: `{"jobs": [...]}` with every job's last state.
    pub fn final_json(&self) -> Object {
        let list: Vec<Value> = self.jobs().map(|j| Value::Object(j.to_json())).collect();
        let mut obj = Object::new();
        obj.insert("jobs".into(), Value::Array(list));
        obj
    }
}

/// Progress bars on standard error, one per job (rate and ETA from
/// indicatif's own estimate).
pub(crate) struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: BTreeMap<(bool, String), ProgressBar>,
}

impl Bars {
    /// Bars drawn on standard error.
    pub(crate) fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        Bars {
            multi,
            style: ProgressStyle::with_template(
                "{prefix:>16} {bar:30.cyan/blue} {percent:>3}% {binary_bytes_per_sec:>12} ETA {eta:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
            bars: BTreeMap::new(),
        }
    }

    /// Show the jobs' current state.
    pub(crate) fn show<'a>(&mut self, jobs: impl Iterator<Item = &'a Job>) {
        for job in jobs {
            let len = job.total.unwrap_or(0).max(1);
            let pos = job.current.unwrap_or(0).min(len);
            let bar = self
                .bars
                .entry((job.is_migration(), job.id.clone()))
                .or_insert_with(|| {
                    let b = self.multi.add(
                        ProgressBar::new(len)
                            .with_position(pos)
                            .with_style(self.style.clone())
                            .with_prefix(job.label())
                            .with_message(job.status.clone()),
                    );
                    // The part done before /jobs started is no rate: the
                    // estimate (rate, ETA) starts from here.
                    b.tick();
                    b.reset_eta();
                    b
                });
            if bar.prefix() != job.label() {
                bar.set_prefix(job.label());
            }
            if bar.message() != job.status {
                bar.set_message(job.status.clone());
            }
            if bar.length() != Some(len) {
                bar.set_length(len);
            }
            bar.set_position(pos);
        }
        // Each change draws only if the terminal's refresh rate allows:
        // draw the whole state now, so no bar is left showing an old one.
        self.multi.suspend(|| ());
    }

    /// A handle to print above the bars.
    pub(crate) fn above(&self) -> Above {
        Above(self.multi.clone())
    }

    /// Take the bars off the screen and stop drawing (as dropping them
    /// does).
    pub(crate) fn finish(self) {}
}

impl Drop for Bars {
    fn drop(&mut self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        let _ = self.multi.clear();
    }
}

/// Prints above a [`Bars`] (events arriving while `/jobs` follows jobs).
#[derive(Clone)]
pub(crate) struct Above(MultiProgress);

impl Above {
    /// Run `print` with the bars off the screen; they are drawn again
    /// below what it printed (flush what it wrote before returning).
    pub(crate) fn print<R>(&self, print: impl FnOnce() -> R) -> R {
        self.0.suspend(print)
    }
}

impl Default for Bars {
    fn default() -> Bars {
        Bars::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, status: &str) -> Value {
        json!({"id": id, "status": status})
    }

    #[test]
    fn changes_running_and_final_state() {
        let mut p = Progress::new();
        let jobs = json!([{"id": "job0", "type": "mirror", "status": "running",
                           "current-progress": 0, "total-progress": 100}]);
        let changed = p.update(Some(&jobs), Some(&json!({})));
        assert_eq!(changed.len(), 1);
        assert!(p.running());
        // Same status and percentage: nothing to say.
        assert!(p.update(Some(&jobs), Some(&json!({}))).is_empty());
        let jobs = json!([{"id": "job0", "type": "mirror", "status": "running",
                           "current-progress": 50, "total-progress": 100}]);
        let changed = p.update(Some(&jobs), None);
        assert_eq!(changed[0].percent(), Some(50));
        let jobs = json!([{"id": "job0", "type": "mirror", "status": "ready",
                           "current-progress": 100, "total-progress": 100}]);
        let changed = p.update(Some(&jobs), None);
        assert_eq!(changed[0].status, "ready");
        // Ready waits for job-complete: nothing moves on its own.
        assert!(!p.running());
        let last = p.final_json();
        assert_eq!(
            Value::Object(last),
            json!({"jobs": [{"job": "job0", "type": "mirror", "status": "ready",
                             "current-progress": 100, "total-progress": 100, "percent": 100}]})
        );
    }

    #[test]
    fn a_dismissed_job_keeps_its_last_real_figures() {
        let known = Known::default();
        let mut p = Progress::new();
        let jobs = json!([{"id": "bk", "type": "backup", "status": "running",
                           "current-progress": 10, "total-progress": 40}]);
        p.update(Some(&jobs), None);
        // Cancelled: the events say so, with the figures...
        let cancelled = json!({"device": "bk", "len": 40, "offset": 20, "type": "backup"});
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("bk", "aborting")),
            true,
            &known,
        );
        p.event("BLOCK_JOB_CANCELLED", Some(&cancelled), true, &known);
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("bk", "concluded")),
            true,
            &known,
        );
        // ... and gone from query-jobs: dismissed, with its figures.
        let changed = p.update(Some(&json!([])), None);
        assert_eq!(changed.len(), 1);
        assert!(!p.running());
        let last = json!({"jobs": [{"job": "bk", "type": "backup", "status": "null",
                                    "current-progress": 20, "total-progress": 40, "percent": 50}]});
        assert_eq!(Value::Object(p.final_json()), last);
        // The null event that follows changes nothing.
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("bk", "null")),
            true,
            &known,
        );
        assert!(p.update(Some(&json!([])), None).is_empty());
        assert_eq!(Value::Object(p.final_json()), last);
    }

    #[test]
    fn a_running_job_that_leaves_query_jobs_is_done() {
        let mut p = Progress::new();
        let jobs = json!([{"id": "j", "type": "stream", "status": "running",
                           "current-progress": 1, "total-progress": 2}]);
        p.update(Some(&jobs), None);
        assert!(p.running());
        // Its events were missed (they may trail over libvirt): it is gone.
        p.update(Some(&json!([])), None);
        assert!(!p.running());
        assert_eq!(p.jobs().next().unwrap().status, "null");
        assert_eq!(p.jobs().next().unwrap().kind.as_deref(), Some("stream"));
    }

    #[test]
    fn only_jobs_created_since_the_start_or_seen_live_are_taken_from_events() {
        let mut known = Known::default();
        let completed = json!({"device": "new", "len": 8, "offset": 8, "type": "backup"});
        known.event("BLOCK_JOB_COMPLETED", Some(&completed));
        let mut p = Progress::new();
        // Before /jobs started: an old job that ended is not taken up...
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("old", "concluded")),
            false,
            &known,
        );
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("old", "null")),
            false,
            &known,
        );
        // ... one created since the previous command is, with the figures
        // its events gave.
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("new", "created")),
            false,
            &known,
        );
        p.event("BLOCK_JOB_COMPLETED", Some(&completed), false, &known);
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("new", "concluded")),
            false,
            &known,
        );
        // After it started, any job is.
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("live", "aborting")),
            true,
            &known,
        );
        let changed = p.update(Some(&json!([])), Some(&json!({"status": "completed"})));
        let ids: Vec<&str> = changed.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["live", "new"]);
        assert_eq!(
            Value::Object(changed[1].to_json()),
            json!({"job": "new", "type": "backup", "status": "null",
                   "current-progress": 8, "total-progress": 8, "percent": 100})
        );
        // Nothing known of it: null, not a made-up type or progress.
        assert_eq!(
            Value::Object(changed[0].to_json()),
            json!({"job": "live", "type": null, "status": "null",
                   "current-progress": null, "total-progress": null})
        );
    }

    #[test]
    fn known_figures_fill_in_a_job_seen_only_in_events() {
        let mut known = Known::default();
        known.remember(&Job {
            id: "m".to_owned(),
            kind: Some("mirror".to_owned()),
            status: "running".to_owned(),
            current: Some(3),
            total: Some(4),
            error: None,
        });
        let mut p = Progress::new();
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("m", "aborting")),
            true,
            &known,
        );
        let job = p.jobs().next().unwrap();
        assert_eq!(
            (job.kind.as_deref(), job.current, job.total),
            (Some("mirror"), Some(3), Some(4))
        );
        // A job created anew under that id is another job.
        known.event("JOB_STATUS_CHANGE", Some(&status("m", "created")));
        let mut p = Progress::new();
        p.event(
            "JOB_STATUS_CHANGE",
            Some(&status("m", "created")),
            true,
            &known,
        );
        assert_eq!(p.jobs().next().unwrap().kind, None);
    }

    #[test]
    fn migration_is_shown_only_when_it_runs_and_counts_what_remains() {
        let mut p = Progress::new();
        // One that completed before: not shown.
        let done = json!({"status": "completed", "ram": {"transferred": 10, "remaining": 0, "total": 400}});
        assert!(p.update(Some(&json!([])), Some(&done)).is_empty());
        assert_eq!(Value::Object(p.final_json()), json!({"jobs": []}));
        // One that runs: shown, its progress what no longer remains (zero
        // pages are never transferred).
        let active =
            json!({"status": "active", "ram": {"transferred": 10, "remaining": 300, "total": 400}});
        let changed = p.update(Some(&json!([])), Some(&active));
        assert_eq!(changed[0].label(), "migration");
        assert_eq!(changed[0].percent(), Some(25));
        assert!(p.running());
        let changed = p.update(Some(&json!([])), Some(&done));
        assert_eq!(changed[0].percent(), Some(100));
        assert!(!p.running());
        // Set up since the previous command (the events capability): shown
        // even when it completed before the first poll.
        let mut p = Progress::new();
        let known = Known::default();
        p.event(
            "MIGRATION",
            Some(&json!({"status": "setup"})),
            false,
            &known,
        );
        let changed = p.update(Some(&json!([])), Some(&done));
        assert_eq!(changed[0].status, "completed");
        // Garbage is no job.
        let mut p = Progress::new();
        assert!(p.update(Some(&json!("x")), Some(&json!([1]))).is_empty());
        assert!(!p.running());
    }

    #[test]
    fn labels() {
        let job = |id: &str, kind: Option<&str>| Job {
            id: id.to_owned(),
            kind: kind.map(str::to_owned),
            status: "running".to_owned(),
            current: None,
            total: None,
            error: None,
        };
        assert_eq!(job("m0", Some("mirror")).label(), "mirror m0");
        assert_eq!(job("m0", None).label(), "m0");
        assert_eq!(job("migration", Some("migration")).label(), "migration");
    }
}
