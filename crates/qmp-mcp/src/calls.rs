//! What each tool does: its checked arguments, the target, the calls to
//! QEMU (on tokio's blocking pool) and the answer, built with `qmp-shell`'s
//! own pieces: the `--read-only` allow-list ([`readonly`]), the schema's
//! help text and deprecation facts ([`SchemaStore`](qmp_shell::store::SchemaStore)), event matching
//! ([`meta::matches`]) and job progress ([`Progress`]).

use std::sync::Arc;
use std::time::Duration;

use qmp_client::{Client, Error as QmpError, Incoming, Object, Reply};
use qmp_shell::jobs::Progress;
use qmp_shell::store::SCHEMA_LOOKUP;
use qmp_shell::wording::{client_error, shown};
use qmp_shell::{meta, readonly};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::targets::{Found, Live, Pool, Slot, Use};
use crate::tools::{Answer, Input, Mode, MAX_WAIT_SECONDS};

/// Run tool `name` with `args`: always an answer, never a panic.
pub async fn call(pool: &Arc<Pool>, mode: Mode, name: &str, args: Option<Object>) -> Answer {
    let result = match name {
        "targets" => targets(pool, mode, args).await,
        "describe" => describe(pool, args).await,
        "execute" => execute(pool, mode, args).await,
        "hmp" => hmp(pool, mode, args).await,
        "wait_event" => wait_event(pool, args).await,
        "jobs" => jobs(pool, args).await,
        _ => Err(format!(
            "unknown tool `{name}`; the tools are: {}",
            crate::tools::NAMES.join(", ")
        )),
    };
    result.unwrap_or_else(Answer::error)
}

/// JSON text for a result.
fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("(cannot show the reply: {e})"))
}

/// Run `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("internal error: {e}"))
}

/// The target named by the `target` argument, connected.
async fn connected(pool: &Pool, target: Option<&str>) -> Result<(Arc<Slot>, Use), String> {
    let slot = pool.resolve(target).await?;
    let used = pool.live(&slot).await?;
    Ok((slot, used))
}

/// Why a call failed, for the caller.
fn failure(slot: &Slot, live: &Live, err: &QmpError, timeout: Duration) -> String {
    match err {
        QmpError::Disconnected => format!(
            "target {} went away: {}; the next call will try to connect again",
            slot.label,
            live.lost_reason()
        ),
        QmpError::Timeout(_) => format!(
            "no reply from target {} within {} s (qmp-mcp --timeout); the command may still \
             be running in QEMU",
            slot.label,
            timeout.as_secs_f64()
        ),
        other => format!("target {}: {}", slot.label, client_error(other)),
    }
}

/// The client's own warnings (frames it could not decode, events it had
/// to drop), as notes; events are kept by the connection's tap instead.
fn client_notes(client: &Client) -> Vec<String> {
    client
        .drain_incoming()
        .into_iter()
        .filter_map(|item| match item {
            Incoming::Warning(w) => Some(format!("warning: {w}")),
            _ => None,
        })
        .collect()
}

async fn targets(pool: &Arc<Pool>, mode: Mode, args: Option<Object>) -> Result<Answer, String> {
    Input::new("targets", args).finish()?;
    pool.rescan().await;
    let mut set = JoinSet::new();
    for (i, slot) in pool.slots().into_iter().enumerate() {
        let pool = Arc::clone(pool);
        set.spawn(async move {
            let state = pool.live(&slot).await;
            let mut entry = Object::new();
            entry.insert("target".into(), json!(slot.label));
            entry.insert("kind".into(), json!(slot.kind()));
            match state {
                Ok(used) => {
                    entry.insert("state".into(), json!("connected"));
                    if let Some(v) = &used.live.version {
                        entry.insert("qemu".into(), json!(v));
                    }
                }
                Err(why) => {
                    entry.insert("state".into(), json!("unreachable"));
                    entry.insert("error".into(), json!(why));
                }
            }
            (i, entry)
        });
    }
    let mut entries = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(entry) = done {
            entries.push(entry);
        }
    }
    entries.sort_by_key(|(i, _)| *i);
    let mut list: Vec<Value> = entries.into_iter().map(|(_, e)| Value::Object(e)).collect();
    for (uri, error) in pool.scan_errors() {
        list.push(json!({
            "uri": uri.unwrap_or_else(|| "(the default URI)".to_owned()),
            "state": "unreachable",
            "error": error,
        }));
    }
    let answer = json!({
        "mode": if mode.allow_writes { "read-write" } else { "read-only" },
        "targets": list,
    });
    Ok(Answer::ok(json_text(&answer)))
}

async fn describe(pool: &Arc<Pool>, args: Option<Object>) -> Result<Answer, String> {
    let mut input = Input::new("describe", args);
    let name = input.string("name")?.map(|n| n.trim().to_owned());
    let target = input.string("target")?;
    input.finish()?;
    if pool.settings().guest_agent {
        return Err(
            "describe: a guest agent has no QMP schema (execute guest-info lists its \
                    commands)"
                .to_owned(),
        );
    }
    let (slot, used) = connected(pool, target.as_deref()).await?;
    let live = Arc::clone(&used.live);
    let timeout = pool.settings().timeout.max(SCHEMA_LOOKUP);
    let answer = blocking(move || {
        let schema = live
            .store
            .schema(&live.client, Some(timeout))
            .map_err(|e| format!("target {}: cannot read the QMP schema: {e}", slot.label))?;
        let name = name.filter(|n| !n.is_empty());
        if let Some(text) = schema.help(name.as_deref()) {
            return Ok(text);
        }
        let prefix = name.unwrap_or_default();
        let commands: Vec<&str> = schema
            .command_names()
            .into_iter()
            .filter(|c| c.starts_with(&prefix))
            .collect();
        let upper = prefix.to_ascii_uppercase();
        let events: Vec<&str> = schema
            .event_names()
            .into_iter()
            .filter(|e| e.starts_with(&upper))
            .collect();
        if commands.is_empty() && events.is_empty() {
            return Err(format!(
                "describe: no command or event named '{prefix}', and none starts with it \
                 (describe with no name lists every command)"
            ));
        }
        let mut text = String::new();
        if !commands.is_empty() {
            text.push_str(&format!(
                "Commands starting with '{prefix}':\n  {}\n",
                commands.join("\n  ")
            ));
        }
        if !events.is_empty() {
            text.push_str(&format!(
                "Events starting with '{upper}':\n  {}\n",
                events.join("\n  ")
            ));
        }
        Ok(text)
    })
    .await??;
    Ok(Answer::ok(answer).with_notes(used.note))
}

/// Refused under the default read-only mode.
fn refusal(name: &str) -> String {
    format!(
        "refused: {name} may change the VM and this server is read-only; it was not sent \
         (qmp-mcp --allow-writes lets every command through)"
    )
}

async fn execute(pool: &Arc<Pool>, mode: Mode, args: Option<Object>) -> Result<Answer, String> {
    let mut input = Input::new("execute", args);
    let command = input.required_string("command")?.trim().to_owned();
    let arguments = input.object("arguments")?;
    let target = input.string("target")?;
    input.finish()?;
    if !mode.allow_writes && !readonly::allowed(&command, arguments.as_ref(), mode.guest_agent) {
        return Err(refusal(&command));
    }
    let (slot, used) = connected(pool, target.as_deref()).await?;
    let timeout = pool.settings().timeout;
    let live = Arc::clone(&used.live);
    live.events.mark();
    let guest_agent = mode.guest_agent;
    let (result, mut notes) = blocking(move || {
        let mut notes = Vec::new();
        if !guest_agent {
            if let Some(facts) = live.store.facts(&live.client) {
                notes.extend(
                    facts
                        .warnings(&command, arguments.as_ref())
                        .into_iter()
                        .map(|w| format!("warning: {w}")),
                );
            }
        }
        let result = live.client.execute(&command, arguments, Some(timeout));
        notes.extend(client_notes(&live.client));
        (result, notes)
    })
    .await?;
    notes.extend(used.note.clone());
    Ok(reply_answer(&slot, &used.live, result, timeout).with_notes(notes))
}

/// A command's reply as an answer: the reply without its id (an error
/// reply is an error result), or why there is none.
fn reply_answer(
    slot: &Slot,
    live: &Live,
    result: Result<Reply, QmpError>,
    timeout: Duration,
) -> Answer {
    match result {
        Ok(reply) => {
            let error = reply.is_error();
            let body = Value::Object(shown(reply));
            Answer {
                error,
                texts: vec![json_text(&body)],
            }
        }
        Err(err) => Answer::error(failure(slot, live, &err, timeout)),
    }
}

async fn hmp(pool: &Arc<Pool>, mode: Mode, args: Option<Object>) -> Result<Answer, String> {
    let mut input = Input::new("hmp", args);
    let line = input.required_string("command_line")?;
    let target = input.string("target")?;
    input.finish()?;
    if mode.guest_agent {
        return Err("hmp: a guest agent has no human monitor".to_owned());
    }
    let mut hmp_args = Object::new();
    hmp_args.insert("command-line".into(), json!(line));
    if !mode.allow_writes && !readonly::allowed("human-monitor-command", Some(&hmp_args), false) {
        let first = line.split_whitespace().next().unwrap_or_default();
        return Err(format!(
            "refused: the HMP command `{first}` may change the VM and this server is \
             read-only (only `info` command lines are sent); it was not sent \
             (qmp-mcp --allow-writes lets every command through)"
        ));
    }
    let (slot, used) = connected(pool, target.as_deref()).await?;
    let timeout = pool.settings().timeout;
    let live = Arc::clone(&used.live);
    live.events.mark();
    let (result, mut notes) = blocking(move || {
        let result = live
            .client
            .execute("human-monitor-command", Some(hmp_args), Some(timeout));
        (result, client_notes(&live.client))
    })
    .await?;
    notes.extend(used.note.clone());
    let answer = match result {
        Ok(reply) => match reply.ret() {
            Some(Value::String(text)) => Answer::ok(text.replace("\r\n", "\n")),
            _ => reply_answer(&slot, &used.live, Ok(reply), timeout),
        },
        Err(err) => Answer::error(failure(&slot, &used.live, &err, timeout)),
    };
    Ok(answer.with_notes(notes))
}

async fn wait_event(pool: &Arc<Pool>, args: Option<Object>) -> Result<Answer, String> {
    let mut input = Input::new("wait_event", args);
    let event = input.required_string("event")?.trim().to_owned();
    let filter = input.object("match")?.unwrap_or_default();
    let timeout = input.seconds("timeout", MAX_WAIT_SECONDS)?;
    let target = input.string("target")?;
    input.finish()?;
    if pool.settings().guest_agent {
        return Err("wait_event: a guest agent sends no events".to_owned());
    }
    let (slot, used) = connected(pool, target.as_deref()).await?;
    let live = Arc::clone(&used.live);
    // An event the VM does not have would never come.
    let unknown = {
        let live = Arc::clone(&live);
        let name = event.clone();
        blocking(move || {
            let facts = live.store.facts(&live.client)?;
            if facts.knows_event(&name) {
                return None;
            }
            let upper = name.to_ascii_uppercase();
            Some(if upper != name && facts.knows_event(&upper) {
                format!(" (did you mean {upper}?)")
            } else {
                String::new()
            })
        })
        .await?
    };
    if let Some(hint) = unknown {
        return Err(format!(
            "wait_event: target {} has no event named {event}{hint}",
            slot.label
        ));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let accept = |ev: &qmp_client::Event| {
        ev.name() == Some(event.as_str()) && meta::matches(ev.body.get("data"), &filter)
    };
    loop {
        let notified = live.events.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match live.events.take(accept) {
            Found::Event(ev) => {
                return Ok(Answer::ok(json_text(&Value::Object(ev.body))).with_notes(used.note))
            }
            Found::Closed => {
                return Err(format!(
                    "target {} went away while waiting for {event}: {}; the next call will \
                     try to connect again",
                    slot.label,
                    live.lost_reason()
                ))
            }
            Found::Nothing => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(format!(
                "no {event} event{} from target {} within {} s",
                if filter.is_empty() {
                    String::new()
                } else {
                    format!(" matching {}", json_text(&Value::Object(filter.clone())))
                },
                slot.label,
                timeout.as_secs_f64()
            ));
        }
    }
}

async fn jobs(pool: &Arc<Pool>, args: Option<Object>) -> Result<Answer, String> {
    let mut input = Input::new("jobs", args);
    let target = input.string("target")?;
    input.finish()?;
    if pool.settings().guest_agent {
        return Err("jobs: a guest agent runs no block jobs".to_owned());
    }
    let (slot, used) = connected(pool, target.as_deref()).await?;
    let timeout = pool.settings().timeout;
    let live = Arc::clone(&used.live);
    let (jobs, migrate) = blocking(move || {
        let q = |name: &str| live.client.execute(name, None, Some(timeout));
        (q("query-jobs"), q("query-migrate"))
    })
    .await?;
    // A query the server lacks (a storage daemon has no migration) is none.
    let ret = |r: &Result<Reply, QmpError>| -> Result<Option<Value>, String> {
        match r {
            Ok(reply) => Ok(reply.ret().cloned()),
            Err(err) => Err(failure(&slot, &used.live, err, timeout)),
        }
    };
    let (jobs, migrate) = (ret(&jobs)?, ret(&migrate)?);
    let mut progress = Progress::new();
    progress.update(jobs.as_ref(), migrate.as_ref());
    let text = json_text(&Value::Object(progress.final_json()));
    Ok(Answer::ok(text).with_notes(used.note))
}
