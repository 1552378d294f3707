//! `/jobs`: what follows block jobs (`query-jobs`) and a migration
//! (`query-migrate`) until none is running.
//!
//! [`Progress`] is pure: fed the two replies of each poll, it tells what
//! changed (one JSON object per job whose status or progress moved) and
//! whether anything still runs. [`Bars`] draws progress bars on a terminal
//! with indicatif.
//!
//! A job runs on its own while its status is `created`, `running`,
//! `waiting` or `aborting`; `ready`, `standby`, `paused` and `pending`
//! wait for a command (`job-complete`, `job-resume`, `job-finalize`), and
//! `concluded` and `null` are done, so none of those keep `/jobs` waiting.
//! A migration runs in every status but `none`, `completed`, `failed` and
//! `cancelled` (the statuses of `query-migrate`).

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use qmp_client::Object;
use serde_json::{json, Value};

/// How often jobs are polled (sooner when a job event arrives).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Job statuses in which a job moves on its own.
const JOB_RUNNING: [&str; 4] = ["created", "running", "waiting", "aborting"];

/// Migration statuses in which no migration is going on.
const MIGRATION_IDLE: [&str; 4] = ["none", "completed", "failed", "cancelled"];

/// One job (or the migration) as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id, or `migration`.
    pub id: String,
    /// `mirror`, `backup`, ..., or `migration`.
    pub kind: String,
    /// Its status.
    pub status: String,
    /// Progress so far (bytes, for block jobs and migration).
    pub current: u64,
    /// Progress when done (may grow while a job runs).
    pub total: u64,
    /// The error, for a job that failed.
    pub error: Option<String>,
}

impl Job {
    /// Whether it moves on its own.
    pub fn running(&self) -> bool {
        if self.kind == "migration" {
            !MIGRATION_IDLE.contains(&self.status.as_str())
        } else {
            JOB_RUNNING.contains(&self.status.as_str())
        }
    }

    /// Percent done, when there is a total.
    pub fn percent(&self) -> Option<u64> {
        (self.total > 0).then(|| (self.current.min(self.total) * 100) / self.total)
    }

    /// The JSON line printed for it.
    pub fn to_json(&self) -> Object {
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
}

/// The jobs and migration of the last poll, and what events said since.
#[derive(Debug, Default)]
pub struct Progress {
    jobs: BTreeMap<String, Job>,
}

/// Job statuses after which a job is done for good.
const JOB_DONE: [&str; 2] = ["concluded", "null"];

fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Jobs from a `query-jobs` return value.
fn parse_jobs(ret: &Value) -> Vec<Job> {
    ret.as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| {
            Some(Job {
                id: j.get("id")?.as_str()?.to_owned(),
                kind: j
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("job")
                    .to_owned(),
                status: j.get("status")?.as_str()?.to_owned(),
                current: u64_field(j, "current-progress"),
                total: u64_field(j, "total-progress"),
                error: j.get("error").and_then(Value::as_str).map(str::to_owned),
            })
        })
        .collect()
}

/// The migration from a `query-migrate` return value (`{}` when none ever
/// ran).
fn parse_migration(ret: &Value) -> Option<Job> {
    let status = ret.get("status")?.as_str()?.to_owned();
    let ram = ret.get("ram");
    Some(Job {
        id: "migration".to_owned(),
        kind: "migration".to_owned(),
        status,
        current: ram.map_or(0, |r| u64_field(r, "transferred")),
        total: ram.map_or(0, |r| u64_field(r, "total")),
        error: ret
            .get("error-desc")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

impl Progress {
    /// A fresh follower.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Take a poll's replies (`None`: that query failed or does not exist,
    /// as on a storage daemon without migration). Returns the jobs whose
    /// status or percentage changed since the last poll, in id order.
    pub fn update(&mut self, jobs: Option<&Value>, migrate: Option<&Value>) -> Vec<Job> {
        let mut now: Vec<Job> = jobs.map(parse_jobs).unwrap_or_default();
        if let Some(m) = migrate.and_then(parse_migration) {
            now.push(m);
        }
        let mut changed = Vec::new();
        // A job that left query-jobs (dismissed once concluded) keeps the
        // last state seen, from the events if they told more.
        let mut seen: BTreeMap<String, Job> = self
            .jobs
            .iter()
            .filter(|(_, j)| JOB_DONE.contains(&j.status.as_str()))
            .map(|(id, j)| (id.clone(), j.clone()))
            .collect();
        for job in now {
            let moved = match self.jobs.get(&job.id) {
                None => true,
                Some(old) => {
                    old.status != job.status
                        || old.percent() != job.percent()
                        || old.error != job.error
                }
            };
            if moved {
                changed.push(job.clone());
            }
            seen.insert(job.id.clone(), job);
        }
        self.jobs = seen;
        changed
    }

    /// Take an event: a job's status change (`JOB_STATUS_CHANGE`), or its
    /// figures when it completes (`BLOCK_JOB_COMPLETED`,
    /// `BLOCK_JOB_READY`). Returns the job if something about it changed.
    pub fn event(&mut self, name: &str, data: Option<&Value>) -> Option<Job> {
        let data = data?;
        match name {
            "JOB_STATUS_CHANGE" => {
                let id = data.get("id")?.as_str()?;
                let status = data.get("status")?.as_str()?;
                let job = self.jobs.entry(id.to_owned()).or_insert_with(|| Job {
                    id: id.to_owned(),
                    kind: "job".to_owned(),
                    status: String::new(),
                    current: 0,
                    total: 0,
                    error: None,
                });
                if job.status == status {
                    return None;
                }
                job.status = status.to_owned();
                Some(job.clone())
            }
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_READY" => {
                let id = data.get("device")?.as_str()?;
                let job = self.jobs.get_mut(id)?;
                job.current = u64_field(data, "offset");
                job.total = u64_field(data, "len");
                if let Some(kind) = data.get("type").and_then(Value::as_str) {
                    job.kind = kind.to_owned();
                }
                if let Some(e) = data.get("error").and_then(Value::as_str) {
                    job.error = Some(e.to_owned());
                }
                None
            }
            _ => None,
        }
    }

    /// Whether a job or the migration still moves on its own.
    pub fn running(&self) -> bool {
        self.jobs.values().any(Job::running)
    }

    /// Every job (and the migration) as last seen.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// The final line: `{"jobs": [...]}` with every job's last state.
    pub fn final_json(&self) -> Object {
        let list: Vec<Value> = self
            .jobs
            .values()
            .map(|j| Value::Object(j.to_json()))
            .collect();
        let mut obj = Object::new();
        obj.insert("jobs".into(), Value::Array(list));
        obj
    }
}

/// Progress bars on standard error, one per job (rate and ETA from
/// indicatif's own estimate).
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: BTreeMap<String, ProgressBar>,
}

impl Bars {
    /// Bars drawn on standard error.
    pub fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style: ProgressStyle::with_template(
                "{prefix:>16} {bar:30.cyan/blue} {percent:>3}% {binary_bytes_per_sec:>12} ETA {eta:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
            bars: BTreeMap::new(),
        }
    }

    /// Show the jobs' current state.
    pub fn show<'a>(&mut self, jobs: impl Iterator<Item = &'a Job>) {
        for job in jobs {
            let bar = self.bars.entry(job.id.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(job.total.max(1)));
                b.set_style(self.style.clone());
                b.set_prefix(format!("{} {}", job.kind, job.id));
                b
            });
            bar.set_length(job.total.max(1));
            bar.set_position(job.current.min(job.total.max(1)));
            bar.set_message(job.status.clone());
        }
    }

    /// A handle to print above the bars.
    pub fn above(&self) -> Above {
        Above(self.multi.clone())
    }

    /// Leave the bars as they are (finished) and stop drawing.
    pub fn finish(self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        let _ = self.multi.clear();
    }
}

/// Prints above a [`Bars`] (events arriving while `/jobs` follows jobs).
#[derive(Clone)]
pub struct Above(MultiProgress);

impl Above {
    /// Run `print` with the bars off the screen; they are drawn again
    /// below what it printed (flush what it wrote before returning).
    pub fn print<R>(&self, print: impl FnOnce() -> R) -> R {
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
    fn a_dismissed_job_keeps_its_last_state_from_the_events() {
        let mut p = Progress::new();
        let jobs = json!([{"id": "bk", "type": "backup", "status": "running",
                           "current-progress": 10, "total-progress": 40}]);
        p.update(Some(&jobs), None);
        let completed = json!({"device": "bk", "len": 40, "offset": 40, "type": "backup"});
        assert!(p.event("BLOCK_JOB_COMPLETED", Some(&completed)).is_none());
        let changed = p.event(
            "JOB_STATUS_CHANGE",
            Some(&json!({"id": "bk", "status": "concluded"})),
        );
        assert_eq!(changed.unwrap().status, "concluded");
        // Auto-dismissed: gone from query-jobs, still in the final state.
        assert!(p.update(Some(&json!([])), None).is_empty());
        assert!(!p.running());
        assert_eq!(
            Value::Object(p.final_json()),
            json!({"jobs": [{"job": "bk", "type": "backup", "status": "concluded",
                             "current-progress": 40, "total-progress": 40, "percent": 100}]})
        );
    }

    #[test]
    fn migration_counts_until_it_completes() {
        let mut p = Progress::new();
        let m = json!({"status": "active", "ram": {"transferred": 10, "total": 40}});
        let changed = p.update(Some(&json!([])), Some(&m));
        assert_eq!(changed[0].id, "migration");
        assert_eq!(changed[0].percent(), Some(25));
        assert!(p.running());
        p.update(Some(&json!([])), Some(&json!({"status": "completed"})));
        assert!(!p.running());
        // No job at all: nothing runs.
        let mut p = Progress::new();
        assert!(p.update(Some(&json!([])), Some(&json!({}))).is_empty());
        assert!(!p.running());
        // Garbage is no job.
        assert!(p.update(Some(&json!("x")), Some(&json!([1]))).is_empty());
    }
}
