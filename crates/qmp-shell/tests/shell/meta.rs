//! The shell's own commands against real QEMU: `/wait` on STOP and RESUME
//! and on the status changes of real block jobs, `/jobs` following a
//! throttled job, `/record` and `/play`, `-e`; and the safety net:
//! `/oob`, `/fd`, `--read-only`, deprecation warnings.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// Run our shell with a private cache directory (`cache`).
fn shell(args: &[&str], stdin: &str, cache: &Path) -> std::process::Output {
    run_shell_env(
        &ours(),
        args,
        stdin,
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.to_str().unwrap())],
    )
}

fn status_of(socket: &Path) -> Value {
    let reply = qmp_raw(socket, &[r#"{"execute": "query-status"}"#]);
    serde_json::from_str(&reply[0]).unwrap()
}

// ---------------------------------------------------------------------------
// /wait
// ---------------------------------------------------------------------------

#[test]
fn wait_sees_events_caused_before_it_was_read() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    // STOP arrives with the reply to `stop`, before `/wait` is read: it
    // still counts (events since the previous command was sent).
    let out = shell(
        &["--json", peer.socket_str()],
        "stop\n/wait STOP\ncont\n/wait --timeout=30 RESUME\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 4, "{}", show(&out));
    assert_eq!(lines[0], serde_json::json!({"return": {}}));
    assert_eq!(lines[1]["event"], "STOP");
    assert!(lines[1]["timestamp"]["seconds"].is_u64());
    assert_eq!(lines[2], serde_json::json!({"return": {}}));
    assert_eq!(lines[3]["event"], "RESUME");
}

#[test]
fn wait_ignores_events_from_before_the_previous_command_and_times_out() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    // STOP came before `query-name` was sent: `/wait STOP` after it must
    // not take that one, and times out.
    let out = shell(
        &["--exit-status", peer.socket_str()],
        "stop\nquery-name\n/wait --timeout=1 STOP\nquery-status\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("ERROR: /wait: no STOP event within 1 s\n"),
        "{}",
        show(&out)
    );
    // The session went on after the failed /wait.
    assert!(
        text(&out.stdout).contains("\"status\": \"paused\""),
        "{}",
        show(&out)
    );
}

#[test]
fn wait_for_an_event_caused_elsewhere_with_a_filter() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let mut shell = Running::start(
        &ours(),
        &["--json", peer.socket_str()],
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    shell.send("query-name\n/wait --timeout=60 RESET reason=host-qmp-system-reset\n");
    // The n-th line of standard output, once it is there.
    let nth_line = |shell: &mut Running, n: usize| -> String {
        let out =
            shell.wait_stdout_until(&format!("line {}", n + 1), |s| s.matches('\n').count() > n);
        out.split_inclusive('\n')
            .nth(n)
            .unwrap_or_default()
            .to_owned()
    };
    let line = nth_line(&mut shell, 0);
    assert_eq!(line, "{\"return\": {}}\n");
    // The event is caused through the other monitor, while /wait waits.
    qmp_raw(peer.second_socket(), &[r#"{"execute": "system_reset"}"#]);
    let line = nth_line(&mut shell, 1);
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["event"], "RESET", "{line}");
    assert_eq!(ev["data"]["reason"], "host-qmp-system-reset", "{line}");
    let (status, _, _) = shell.finish(SHELL_TIMEOUT);
    assert_eq!(status.code(), Some(0));
}

/// The mirror of the issue: between two null-co nodes, throttled.
const MIRROR: &str = "\
blockdev-add driver=null-co node-name=src size=67108864
blockdev-add driver=null-co node-name=dst size=67108864
blockdev-mirror job-id=job0 device=src target=dst sync=full speed=67108864
/wait --timeout=60 JOB_STATUS_CHANGE id=job0 status=ready
job-complete id=job0
/wait --timeout=60 JOB_STATUS_CHANGE id=job0 status=concluded
query-jobs
";

#[test]
fn wait_follows_a_real_mirror_to_ready_and_concluded() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let out = shell(&["--json", peer.socket_str()], MIRROR, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 7, "{}", show(&out));
    assert_eq!(
        lines[3]["data"],
        serde_json::json!({"status": "ready", "id": "job0"})
    );
    assert_eq!(
        lines[5]["data"],
        serde_json::json!({"status": "concluded", "id": "job0"})
    );
    // Concluded and dismissed.
    assert_eq!(lines[6], serde_json::json!({"return": []}));
}

#[test]
fn wait_for_an_unknown_event_is_an_error() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let out = shell(
        &[
            "-c",
            "/wait NO_SUCH_EVENT",
            "-c",
            "query-name",
            peer.socket_str(),
        ],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: /wait: the server has no event named NO_SUCH_EVENT\n"
    );
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n");
}

/// Two backups at 32 MiB/s: `ja` (32 MiB) ends long before `jb` (96 MiB).
const TWO_JOBS: &str = "\
blockdev-add driver=null-co node-name=a1 size=33554432
blockdev-add driver=null-co node-name=a2 size=33554432
blockdev-add driver=null-co node-name=b1 size=100663296
blockdev-add driver=null-co node-name=b2 size=100663296
blockdev-backup job-id=ja device=a1 target=a2 sync=full speed=33554432
blockdev-backup job-id=jb device=b1 target=b2 sync=full speed=33554432
";

#[test]
fn wait_twice_returns_each_event_once() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let script = format!(
        "{TWO_JOBS}/wait --timeout=60 BLOCK_JOB_COMPLETED\n\
         /wait --timeout=60 BLOCK_JOB_COMPLETED\nquery-block-jobs\n\
         /wait --timeout=1 BLOCK_JOB_COMPLETED\nquery-name\n"
    );
    let out = shell(&["--json", peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 11, "{}", show(&out));
    // Each /wait consumed the event it returned: the second one waited for
    // the second job, which was over before the script went on.
    assert_eq!(lines[6]["data"]["device"], "ja", "{}", show(&out));
    assert_eq!(lines[7]["data"]["device"], "jb", "{}", show(&out));
    assert_eq!(lines[8], serde_json::json!({"return": []}));
    // No third one.
    assert_eq!(lines[9]["error"]["class"], "Timeout", "{}", show(&out));
    assert_eq!(lines[10], serde_json::json!({"return": {}}));
}

#[test]
fn wait_counts_events_from_the_previous_command_sent_and_each_once() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    // On a pipe (banner, prompts, events at empty lines): `/wait` twice;
    // an empty line printing the events before a `/wait`, which still
    // sees its event; an event from before the previous command; and one
    // from before a command sent before the reply that follows it (the
    // commands are pipelined).
    let script = "\
stop
/wait STOP
/wait --timeout=1 STOP
cont

/wait RESUME
query-name
/wait --timeout=1 RESUME
stop
query-status
/wait --timeout=1 STOP
";
    let out = shell(&["--exit-status", peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = without_timestamps(&text(&out.stdout));
    let (_banner, session) = stdout.split_once("\n\n").expect("the banner");
    let stop = r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "STOP"}"#;
    let resume = r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "RESUME"}"#;
    let ok = r#"{"return": {}}"#;
    let paused = r#"{"return": {"status": "paused", "singlestep": false, "running": false}}"#;
    assert_eq!(
        session,
        format!(
            "(QEMU) {ok}\n(QEMU) {stop}\n(QEMU) (QEMU) {ok}\n\
             (QEMU) {stop}\n{resume}\n(QEMU) {resume}\n\
             (QEMU) {ok}\n(QEMU) (QEMU) {ok}\n(QEMU) {paused}\n(QEMU) (QEMU) \n"
        ),
        "{}",
        show(&out)
    );
    assert_eq!(
        text(&out.stderr),
        "ERROR: /wait: no STOP event within 1 s\n\
         ERROR: /wait: no RESUME event within 1 s\n\
         ERROR: /wait: no STOP event within 1 s\n"
    );
}

#[test]
fn wait_after_a_timeout_takes_a_later_event_once() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let mut shell = Running::start(
        &ours(),
        &["--json", peer.socket_str()],
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    shell.send("query-name\n/wait --timeout=1 STOP\nquery-version\n");
    shell.wait_stdout("\"qemu\"");
    // STOP comes through the other monitor, after the command before the
    // next /wait was sent.
    shell.send("/wait --timeout=60 STOP\n");
    qmp_raw(peer.second_socket(), &[r#"{"execute": "stop"}"#]);
    shell.wait_stdout("\"STOP\"");
    shell.send("/wait --timeout=1 STOP\nquery-status\n");
    let (status, stdout, stderr) = shell.finish(SHELL_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    let lines = json_lines(stdout.as_bytes());
    let shape: Vec<String> = lines
        .iter()
        .map(
            |l| match (&l["error"]["class"], &l["event"], &l["return"]) {
                (Value::String(class), _, _) => class.clone(),
                (_, Value::String(event), _) => event.clone(),
                (_, _, ret) if ret.get("qemu").is_some() => "version".to_owned(),
                (_, _, ret) if ret.get("status").is_some() => ret["status"].to_string(),
                _ => l.to_string(),
            },
        )
        .collect();
    assert_eq!(
        shape,
        [
            r#"{"return":{}}"#,
            "Timeout",
            "version",
            "STOP",
            "Timeout",
            "\"paused\""
        ],
        "{stdout}{stderr}"
    );
}

#[test]
fn wait_is_not_fooled_by_a_slow_reader_of_its_output() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    // The schema fills the pipe, so the shell prints the reply to `stop`
    // only once the reader wakes up, long after RESUME came: RESUME still
    // came after `cont` was sent, and `/wait` takes it.
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"{ "$0" --json "$1"; echo "exit=$?" >&2; } | { sleep 2; cat; }"#,
        ours().to_str().unwrap(),
        peer.socket_str(),
    ]);
    let out = run_program_env(
        cmd,
        &[],
        "query-qmp-schema\nquery-qmp-schema\nstop\ncont\n/wait --timeout=10 RESUME\nquery-name\n",
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    let stderr = text(&out.stderr);
    assert!(stderr.ends_with("\nexit=0\n"), "{stderr}");
    assert!(!stderr.contains("/wait"), "{stderr}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[4]["event"], "RESUME");
    assert_eq!(lines[5], serde_json::json!({"return": {}}));
}

// ---------------------------------------------------------------------------
// /jobs
// ---------------------------------------------------------------------------

#[test]
fn jobs_prints_progress_lines_then_the_final_state() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    // 32 MiB at 8 MiB/s: four seconds, polled every half second.
    let script = "\
blockdev-add driver=null-co node-name=b1 size=33554432
blockdev-add driver=null-co node-name=b2 size=33554432
blockdev-backup job-id=bk device=b1 target=b2 sync=full speed=8388608
/jobs --timeout=60
query-jobs
";
    let out = shell(&["--json", peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    let running: Vec<&Value> = lines
        .iter()
        .filter(|l| l["job"] == "bk" && l["status"] == "running" && l["percent"].is_u64())
        .collect();
    assert!(running.len() >= 3, "several progress lines: {}", show(&out));
    let percents: Vec<u64> = running
        .iter()
        .map(|l| l["percent"].as_u64().unwrap())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    let last = &lines[lines.len() - 2];
    let jobs = last["jobs"].as_array().expect("the final state");
    assert_eq!(jobs.len(), 1, "{last}");
    assert_eq!(jobs[0]["job"], "bk");
    assert!(
        ["concluded", "null"].contains(&jobs[0]["status"].as_str().unwrap()),
        "{last}"
    );
    assert_eq!(jobs[0]["percent"], 100, "{last}");
    assert_eq!(lines[lines.len() - 1], serde_json::json!({"return": []}));
}

#[test]
fn jobs_with_nothing_running_ends_at_once() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let out = shell(&["-c", "/jobs", peer.socket_str()], "", cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "{\"jobs\": []}\n");
}

/// The lines `/jobs` printed for jobs (not its final state).
fn job_lines(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("job").is_some()).collect()
}

#[test]
fn jobs_shows_only_jobs_that_exist_when_it_starts_with_their_real_figures() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    // `ja` is over before `/jobs` starts; `jb` (16 MiB at 8 MiB/s) runs;
    // then `/jobs` again, when both are over.
    let script = "\
blockdev-add driver=null-co node-name=a1 size=1048576
blockdev-add driver=null-co node-name=a2 size=1048576
blockdev-add driver=null-co node-name=b1 size=16777216
blockdev-add driver=null-co node-name=b2 size=16777216
blockdev-backup job-id=ja device=a1 target=a2 sync=full
/wait --timeout=60 JOB_STATUS_CHANGE id=ja status=null
blockdev-backup job-id=jb device=b1 target=b2 sync=full speed=8388608
/jobs --timeout=60
/jobs --timeout=60
";
    let out = shell(&["--json", peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    let jobs = job_lines(&lines);
    assert!(!jobs.is_empty(), "{}", show(&out));
    for line in &jobs {
        assert_eq!(line["job"], "jb", "{}", show(&out));
        assert_eq!(line["type"], "backup", "{}", show(&out));
        assert_eq!(line["total-progress"], 16777216, "{}", show(&out));
    }
    let finals: Vec<&Value> = lines.iter().filter(|l| l.get("jobs").is_some()).collect();
    assert_eq!(finals.len(), 2, "{}", show(&out));
    let first = finals[0]["jobs"].as_array().unwrap();
    assert_eq!(first.len(), 1, "{}", show(&out));
    assert_eq!(first[0]["job"], "jb");
    assert_eq!(first[0]["type"], "backup");
    assert_eq!(first[0]["percent"], 100);
    // jb ended before the second /jobs started.
    assert_eq!(
        *finals[1],
        serde_json::json!({"jobs": []}),
        "{}",
        show(&out)
    );
}

#[test]
fn jobs_after_a_timeout_and_an_error_still_follows_a_running_job() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    // 32 MiB at 8 MiB/s: four seconds; the first /jobs gives up long before.
    let script = "\
blockdev-add driver=null-co node-name=b1 size=33554432
blockdev-add driver=null-co node-name=b2 size=33554432
blockdev-backup job-id=jb device=b1 target=b2 sync=full speed=8388608
/jobs --timeout=0.5
no-such-command
/jobs --timeout=60
/jobs --timeout=60
";
    let out = shell(&["--json", peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    let shape: Vec<String> = lines
        .iter()
        .filter(|l| l.get("job").is_none())
        .map(|l| match (&l["error"]["class"], &l["jobs"]) {
            (Value::String(class), _) => class.clone(),
            (_, Value::Array(jobs)) => format!(
                "jobs {}",
                jobs.iter()
                    .map(|j| format!("{} {} {}", j["job"], j["type"], j["status"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => l.to_string(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            r#"{"return":{}}"#,
            r#"{"return":{}}"#,
            r#"{"return":{}}"#,
            r#"jobs "jb" "backup" "running""#,
            "Timeout",
            "CommandNotFound",
            r#"jobs "jb" "backup" "null""#,
            "jobs ",
        ],
        "{}",
        show(&out)
    );
}

#[test]
fn jobs_shows_a_paused_job_with_its_real_figures_and_not_once_cancelled() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let script = "\
blockdev-add driver=null-co node-name=p1 size=67108864
blockdev-add driver=null-co node-name=p2 size=67108864
blockdev-backup job-id=jp device=p1 target=p2 sync=full speed=4194304
/wait --timeout=60 JOB_STATUS_CHANGE id=jp status=running
job-pause id=jp
/jobs --timeout=60
block-job-cancel device=jp force=true
/wait --timeout=60 JOB_STATUS_CHANGE id=jp status=null
/jobs --timeout=60
";
    let out = shell(&["--json", peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    // Paused waits for job-resume: /jobs ends at once, with the job's type
    // and progress (not a placeholder) on every line.
    let jobs = job_lines(&lines);
    assert!(!jobs.is_empty(), "{}", show(&out));
    let first = lines.iter().find_map(|l| l["jobs"].as_array()).unwrap();
    assert_eq!(first.len(), 1, "{}", show(&out));
    for line in jobs.into_iter().chain(first) {
        assert_eq!(line["job"], "jp", "{}", show(&out));
        assert_eq!(line["type"], "backup", "{}", show(&out));
        assert_eq!(line["status"], "paused", "{}", show(&out));
        assert_eq!(line["total-progress"], 67108864, "{}", show(&out));
        assert!(line["current-progress"].as_u64().unwrap() > 0, "{line}");
    }
    // Cancelled and gone before the next /jobs started.
    assert_eq!(
        lines[lines.len() - 1],
        serde_json::json!({"jobs": []}),
        "{}",
        show(&out)
    );
}

#[test]
fn jobs_keeps_the_real_figures_of_a_job_cancelled_while_it_follows() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let mut shell = Running::start(
        &ours(),
        &["--json", peer.socket_str()],
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    // 64 MiB at 4 MiB/s: sixteen seconds, cancelled long before.
    shell.send(
        "blockdev-add driver=null-co node-name=c1 size=67108864\n\
         blockdev-add driver=null-co node-name=c2 size=67108864\n\
         blockdev-backup job-id=jc device=c1 target=c2 sync=full speed=4194304\n\
         /jobs --timeout=60\n",
    );
    shell.wait_stdout("\"percent\"");
    qmp_raw(
        peer.second_socket(),
        &[r#"{"execute": "block-job-cancel", "arguments": {"device": "jc"}}"#],
    );
    let (status, stdout, stderr) = shell.finish(SHELL_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    let lines = json_lines(stdout.as_bytes());
    let last = lines.last().unwrap()["jobs"].as_array().unwrap().clone();
    assert_eq!(last.len(), 1, "{stdout}");
    let job = &last[0];
    assert_eq!(job["job"], "jc");
    assert_eq!(job["type"], "backup", "{stdout}");
    assert_eq!(job["status"], "null", "{stdout}");
    assert_eq!(job["total-progress"], 67108864, "{stdout}");
    let done = job["current-progress"].as_u64().unwrap();
    assert!(done > 0 && done < 67108864, "{stdout}");
    for line in job_lines(&lines) {
        assert_eq!(line["type"], "backup", "{stdout}");
    }
}

/// `-M pc` with 256 MiB of RAM, 8 MiB of it random (not zero pages, which
/// migration hardly sends), paused; a private directory for files.
fn pc_with_data() -> (Peer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("random.bin");
    let mut bytes = vec![0u8; 8 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    std::fs::write(&data, &bytes).unwrap();
    let loader = format!("loader,file={},addr=0x1000000", data.display());
    let peer = Peer::qemu_with_args(&["-M", "pc", "-m", "256", "-S", "-device", &loader]);
    (peer, dir)
}

#[test]
fn jobs_follows_a_migration_to_100_percent_and_not_after() {
    let (peer, _dir) = pc_with_data();
    let cache = tempfile::tempdir().unwrap();
    // 8 MiB of data at 4 MiB/s: about two seconds.
    let script = "\
migrate-set-parameters max-bandwidth=4194304
migrate uri=\"exec:cat > /dev/null\"
/jobs --timeout=60
/jobs --timeout=60
query-migrate
";
    let out = shell(&["--json", peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    let finals: Vec<&Value> = lines.iter().filter(|l| l.get("jobs").is_some()).collect();
    assert_eq!(finals.len(), 2, "{}", show(&out));
    let first = finals[0]["jobs"].as_array().unwrap();
    assert_eq!(first.len(), 1, "{}", show(&out));
    let m = &first[0];
    assert_eq!(m["job"], "migration");
    assert_eq!(m["type"], "migration");
    assert_eq!(m["status"], "completed", "{}", show(&out));
    // Completed is 100%, though most of RAM (zero pages) was never sent.
    assert_eq!(m["percent"], 100, "{}", show(&out));
    assert_eq!(m["current-progress"], m["total-progress"]);
    // Progress grew while it ran.
    let percents: Vec<u64> = job_lines(&lines)
        .iter()
        .filter_map(|l| l["percent"].as_u64())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    // It completed before the second /jobs started.
    assert_eq!(
        *finals[1],
        serde_json::json!({"jobs": []}),
        "{}",
        show(&out)
    );
    assert_eq!(lines.last().unwrap()["return"]["status"], "completed");
}

#[test]
fn jobs_does_not_list_the_migration_inside_a_finished_snapshot_save() {
    let peer = Peer::qemu_with_args(&["-M", "pc", "-m", "64", "-S"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vm.qcow2");
    // A qcow2 node made through QMP (qemu-img may be missing).
    let script = format!(
        "blockdev-create job-id=c0 options={{\"driver\":\"file\",\"filename\":\"{img}\",\"size\":0}}\n\
         /wait --timeout=60 JOB_STATUS_CHANGE id=c0 status=concluded\n\
         job-dismiss id=c0\n\
         blockdev-add driver=file filename={img} node-name=f0\n\
         blockdev-create job-id=c1 options={{\"driver\":\"qcow2\",\"file\":\"f0\",\"size\":67108864}}\n\
         /wait --timeout=60 JOB_STATUS_CHANGE id=c1 status=concluded\n\
         job-dismiss id=c1\n\
         blockdev-add driver=qcow2 node-name=q0 file=f0\n\
         snapshot-save job-id=s0 tag=t0 vmstate=q0 devices=[\"q0\"]\n\
         /wait --timeout=60 JOB_STATUS_CHANGE id=s0 status=concluded\n\
         job-dismiss id=s0\n\
         query-migrate\n\
         /jobs --timeout=60\n",
        img = image.display()
    );
    let out = shell(&["--json", peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    // The snapshot's migration is over (query-migrate reports it for
    // ever): /jobs has nothing to show.
    assert_eq!(
        lines[lines.len() - 2]["return"]["status"],
        "completed",
        "{}",
        show(&out)
    );
    assert_eq!(
        lines[lines.len() - 1],
        serde_json::json!({"jobs": []}),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// /record, /play, -e
// ---------------------------------------------------------------------------

#[test]
fn record_then_play_gives_the_same_replies() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("session.qmp");
    let script = format!(
        "query-name\n/record {}\nquery-status\nqom-get path=/machine property=type\n\
         transaction(\nabort\n)\n/record off\nquery-version\n",
        rec.display()
    );
    let first = shell(&["--json", peer.socket_str()], &script, cache.path());
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (_, rest) = recording(&rec);
    assert_eq!(
        rest,
        "query-status\nqom-get path=/machine property=type\ntransaction(\nabort\n)\n"
    );
    let recorded = &json_lines(&first.stdout)[1..4];
    // Played back (once from a pipe, once with /play): the same replies.
    let piped = shell(
        &["--json", peer.socket_str()],
        &std::fs::read_to_string(&rec).unwrap(),
        cache.path(),
    );
    assert_eq!(json_lines(&piped.stdout), recorded, "{}", show(&piped));
    let played = shell(
        &["--json", peer.socket_str()],
        &format!("/play {}\nquery-name\n", rec.display()),
        cache.path(),
    );
    let lines = json_lines(&played.stdout);
    assert_eq!(&lines[..3], recorded, "{}", show(&played));
    assert_eq!(lines[3], serde_json::json!({"return": {}}));
    // A /play inside a played file is refused.
    let nested = dir.path().join("nested.qmp");
    std::fs::write(&nested, format!("/play {}\nquery-name\n", rec.display())).unwrap();
    let out = shell(
        &[
            "--exit-status",
            "-c",
            &format!("/play {}", nested.display()),
            peer.socket_str(),
        ],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(text(&out.stderr), "ERROR: /play: nested /play is refused\n");
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n");
}

/// A recording split into its header (the comment lines it starts with,
/// checked: when, which shell, which QEMU) and the rest.
fn recording(path: &Path) -> (Vec<String>, String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let header: Vec<String> = text
        .lines()
        .take_while(|l| l.starts_with("# ") && !l.starts_with("# not sent: "))
        .map(str::to_owned)
        .collect();
    let rest: String = text
        .lines()
        .skip(header.len())
        .map(|l| format!("{l}\n"))
        .collect();
    check_header(&header, &text);
    (header, rest)
}

fn check_header(header: &[String], text: &str) {
    assert!(
        header.len() >= 2
            && header[0].starts_with("# qmp-shell ")
            && header[0].contains(" recording, 20")
            && header[0].ends_with(" UTC")
            && header[1].starts_with("# QEMU 7."),
        "not a recording's header:\n{text}"
    );
}

/// `/record FILE` never destroys a file: an existing one (or a symlink to
/// one) is refused, untouched, with the way to add to it; `--append` adds
/// to it (after a header), with the rules of `-l` (made 0600).
#[test]
fn record_refuses_an_existing_file_and_append_adds_to_it() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.qmp");
    std::fs::write(&file, "precious\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("link.qmp");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let (f, l) = (file.to_str().unwrap(), link.to_str().unwrap());
    let out = shell(
        &["--exit-status", peer.socket_str()],
        &format!("/record {f}\nquery-name\n/record {l}\nquery-name\n"),
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: /record: {f} exists; to add to it: /record --append {f}\n\
             ERROR: /record: {l} exists; to add to it: /record --append {l}\n"
        )
    );
    assert_eq!(text(&out.stdout).matches("{\"return\": {}}").count(), 2);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o644);
    // --append, through the symlink: after what is there.
    let out = shell(
        &["--exit-status", peer.socket_str()],
        &format!("/record --append {l}\nquery-status\n/record off\nquery-name\n"),
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text_now = std::fs::read_to_string(&file).unwrap();
    let added = text_now
        .strip_prefix("precious\n")
        .unwrap_or_else(|| panic!("{text_now}"));
    let header: Vec<String> = added.lines().take(2).map(str::to_owned).collect();
    check_header(&header, added);
    assert!(added.ends_with("\nquery-status\n"), "{added}");
    assert_eq!(mode(&file), 0o600);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // A name with a space: the hint quotes it.
    let spaced = dir.path().join("my session.qmp");
    std::fs::write(&spaced, "").unwrap();
    let out = shell(
        &[peer.socket_str()],
        &format!("/record \"{}\"\n", spaced.display()),
        cache.path(),
    );
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: /record: {0} exists; to add to it: /record --append \"{0}\"\n",
            spaced.display()
        )
    );
}

/// What users do next: `/record` twice in a row (the second is refused
/// and the first goes on), `/record off` then `/record` the same file
/// (refused), then `--append` (a second header); lines starting with a
/// space stay out, as they stay out of history.
#[test]
fn record_twice_then_again_after_off() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("a.qmp");
    let r = rec.to_str().unwrap();
    let script = format!(
        "/record {r}\nquery-name\n/record {r}\nquery-status\n  qom-get path=/machine property=type\n\
         /record off\n/record {r}\n/record --append {r}\nquery-version\n/record off\n"
    );
    let out = shell(&[peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: /record: {r} exists; to add to it: /record --append {r} \
             (still recording to {r})\n\
             ERROR: /record: {r} exists; to add to it: /record --append {r}\n"
        )
    );
    let (_, rest) = recording(&rec);
    let (before, after) = rest
        .split_once("# (a line starting with a space: kept out of the recording)\n")
        .unwrap_or_else(|| panic!("{rest}"));
    assert_eq!(before, "query-name\nquery-status\n", "{rest}");
    let header: Vec<String> = after.lines().take(2).map(str::to_owned).collect();
    check_header(&header, after);
    assert_eq!(after.lines().count(), 3, "{rest}");
    assert!(after.ends_with("\nquery-version\n"), "{rest}");
    // It plays back alone: comments skipped.
    let played = shell(
        &["--json", "--exit-status", peer.socket_str()],
        &std::fs::read_to_string(&rec).unwrap(),
        cache.path(),
    );
    assert_eq!(played.status.code(), Some(0), "{}", show(&played));
    assert_eq!(json_lines(&played.stdout).len(), 3, "{}", show(&played));
}

/// A recording holds what was sent: a transaction abandoned by a bad line
/// and a line that does not parse are only comments, so a replay with
/// `-e` runs to the end and leaves the VM as the session did.
#[test]
fn a_recording_keeps_only_comments_of_what_was_not_sent() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.qmp");
    let script = format!(
        "/record {}\n\
         blockdev-add driver=null-co node-name=n0\n\
         transaction(\n\
         block-dirty-bitmap-add node=n0 name=b0\n\
         block-dirty-bitmap-add oops\n\
         query-name bad\n\
         {{\"execute\": \n\"nope\",}}\n\
         stop\n\
         /record off\n\
         cont\n",
        rec.display()
    );
    let out = shell(&[peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let (_, rest) = recording(&rec);
    assert_eq!(
        rest,
        "blockdev-add driver=null-co node-name=n0\n\
         # not sent: transaction(\n\
         # not sent: block-dirty-bitmap-add node=n0 name=b0\n\
         # not sent: block-dirty-bitmap-add oops\n\
         # not sent: query-name bad\n\
         # not sent: {\"execute\": \n\
         # not sent: \"nope\",}\n\
         stop\n"
    );
    // Replayed with -e on the same VM, as it was before (running, no n0):
    // it ends stopped, as the session left it before `cont`.
    let replay = run_shell_env(
        &ours(),
        &["-e", "-c", "blockdev-del node-name=n0", peer.socket_str()],
        "",
        SHELL_TIMEOUT,
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    assert_eq!(replay.status.code(), Some(0), "{}", show(&replay));
    assert_eq!(status_of(peer.second_socket())["return"]["running"], true);
    let replay = shell(
        &["-e", peer.socket_str()],
        &std::fs::read_to_string(&rec).unwrap(),
        cache.path(),
    );
    assert_eq!(replay.status.code(), Some(0), "{}", show(&replay));
    assert_eq!(text(&replay.stderr), "", "{}", show(&replay));
    assert_eq!(status_of(peer.second_socket())["return"]["running"], false);
}

/// A shell command at the `TRANS>` prompt is never an action: `/record`
/// runs (`off` stops recording, `FILE` starts it, and the transaction is
/// recorded whole when sent), the others are refused with one line; the
/// transaction stays open either way, and nothing is done for a refused
/// command (`/fd` creates no file).
#[test]
fn shell_commands_inside_a_transaction_run_or_are_refused() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (rec1, rec2) = (dir.path().join("1.qmp"), dir.path().join("2.qmp"));
    let log = dir.path().join("log");
    let fd = dir.path().join("never-created");
    let script = format!(
        "/record {}\n\
         blockdev-add driver=null-co node-name=n0\n\
         transaction(\n\
         block-dirty-bitmap-add node=n0 name=b0\n\
         /jobs\n\
         /wait STOP\n\
         /play {}\n\
         /fd {} add-fd fdset-id=1\n\
         /oob yank\n\
         /nope\n\
         /record off\n\
         block-dirty-bitmap-add node=n0 name=b1\n\
         )\n\
         transaction(\n\
         block-dirty-bitmap-add node=n0 name=b2\n\
         /record {}\n\
         block-dirty-bitmap-add node=n0 name=b3\n\
         )\n\
         /record off\n",
        rec1.display(),
        rec1.display(),
        fd.display(),
        rec2.display()
    );
    let out = shell(
        &[
            "--exit-status",
            "-l",
            log.to_str().unwrap(),
            peer.socket_str(),
        ],
        &script,
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let refused = |name: &str| {
        format!(
            "ERROR: {name}: not run inside a transaction, which stays open \
             (end it with a line \")\")\n"
        )
    };
    assert_eq!(
        text(&out.stderr),
        ["/jobs", "/wait", "/play", "/fd", "/oob", "/nope"]
            .map(refused)
            .concat(),
        "{}",
        show(&out)
    );
    assert!(!fd.exists());
    // Both transactions went out whole, and worked.
    let sent: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["execute"] == "transaction")
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let names = |v: &Value| -> Vec<String> {
        v["arguments"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["data"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&sent[0]), ["b0", "b1"]);
    assert_eq!(names(&sent[1]), ["b2", "b3"]);
    assert_eq!(
        text(&out.stdout).matches("{\"return\": {}}").count(),
        3,
        "{}",
        show(&out)
    );
    // The first recording stopped before its transaction was sent; the
    // second started inside one, and holds it whole.
    let (_, rest1) = recording(&rec1);
    assert_eq!(rest1, "blockdev-add driver=null-co node-name=n0\n");
    let (_, rest2) = recording(&rec2);
    assert_eq!(
        rest2,
        "transaction(\nblock-dirty-bitmap-add node=n0 name=b2\n\
         block-dirty-bitmap-add node=n0 name=b3\n)\n"
    );
}

/// At the `TRANS>` prompt, `help [NAME]` runs (NAME an action, whose
/// arguments it lists, or a command or an event) and a line starting with
/// `{` is refused with one line (a message over several lines once, skipped
/// to its end); the transaction stays open either way, and is sent with
/// exactly the actions typed. The recording holds the actions alone, and
/// replays with `-e` on a fresh QEMU.
#[test]
fn help_and_raw_json_at_the_trans_prompt_leave_the_transaction_open() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("tx.qmp");
    let log = dir.path().join("log");
    let script = format!(
        "/record {}\n\
         blockdev-add driver=null-co node-name=n0\n\
         transaction(\n\
         block-dirty-bitmap-add node=n0 name=b0\n\
         help block-dirty-bitmap-add\n\
         help\n\
         {{\"type\": \"abort\", \"data\": {{}}}}\n\
         {{\"type\": \"block-dirty-bitmap-add\",\n\
          \"data\": {{\"node\": \"n0\", \"name\": \"bx\"}}}}\n\
         help no-such-thing\n\
         help STOP\n\
         block-dirty-bitmap-add node=n0 name=b1\n\
         )\n\
         query-name\n",
        rec.display()
    );
    let out = shell(
        &[
            "--exit-status",
            "-l",
            log.to_str().unwrap(),
            peer.socket_str(),
        ],
        &script,
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let refused = "ERROR: raw JSON is not an action; the transaction stays open (write each \
                   action as TYPE [KEY=VALUE...], end it with a line \")\")\n";
    assert_eq!(
        text(&out.stderr),
        format!("{refused}{refused}help: no action, command or event named 'no-such-thing'\n"),
        "{}",
        show(&out)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "block-dirty-bitmap-add (transaction action)\nArguments:\n  node: str\n  name: str\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(" actions in a transaction; `help NAME` describes one"),
        "{stdout}"
    );
    assert!(stdout.contains("STOP (event)\n"), "{stdout}");
    // blockdev-add, the transaction, query-name.
    assert_eq!(stdout.matches("{\"return\": {}}").count(), 3, "{stdout}");
    let sent: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["execute"] == "transaction")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0]["arguments"]["actions"],
        serde_json::json!([
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b0"}},
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b1"}}
        ])
    );
    let (_, rest) = recording(&rec);
    assert_eq!(
        rest,
        "blockdev-add driver=null-co node-name=n0\ntransaction(\n\
         block-dirty-bitmap-add node=n0 name=b0\nblock-dirty-bitmap-add node=n0 name=b1\n)\n\
         query-name\n"
    );
    let fresh = Peer::qemu_none();
    let replay = shell(
        &["-e", fresh.socket_str()],
        &std::fs::read_to_string(&rec).unwrap(),
        cache.path(),
    );
    assert_eq!(replay.status.code(), Some(0), "{}", show(&replay));
    assert_eq!(text(&replay.stderr), "", "{}", show(&replay));
}

/// In HMP mode (`-H`) the shell's commands work as in QMP mode, none of
/// them reaches QEMU as an HMP line: `/wait`, `/jobs`, `/record`, `/play`,
/// and `/oob` and `/fd`, which take a QMP command and send it as QMP.
/// `help /` lists them. A recording's header says its lines are HMP
/// commands; it replays with `-H`, and `/play` refuses it without (as it
/// refuses a QMP recording with `-H`), sending nothing. `--read-only`
/// refuses the same in HMP mode, before anything is done, and the
/// recording keeps only comments of what was refused.
#[test]
fn shell_commands_work_in_hmp_mode_and_recordings_say_so() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("hmp.qmp");
    let r = rec.to_str().unwrap();
    let script = format!(
        "/record {r}\nstop\n/wait STOP\ncont\n/wait --timeout=30 RESUME\n/jobs\n\
         /oob query-yank\ninfo name\nhelp /\n/record off\ninfo status\n"
    );
    let out = shell(&["-H", peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stderr), "", "{}", show(&out));
    let stdout = text(&out.stdout);
    for part in [
        "\"event\": \"STOP\"}",
        "\"event\": \"RESUME\"}",
        "{\"jobs\": []}\n",
        "{\"return\": [{\"type\": \"chardev\", \"id\": \"compat_monitor0\"}, ",
        "Shell commands:\n  /wait ",
        "VM status: running",
    ] {
        assert!(stdout.contains(part), "{part} missing:\n{}", show(&out));
    }
    assert!(!stdout.contains("unknown command"), "{}", show(&out));
    let (header, rest) = recording(&rec);
    assert_eq!(
        header.last().map(String::as_str),
        Some("# HMP commands: play them with qmp-shell -H")
    );
    assert_eq!(
        rest,
        "stop\n/wait STOP\ncont\n/wait --timeout=30 RESUME\n/jobs\n/oob query-yank\n\
         info name\nhelp /\n"
    );
    // Replayed with -H: the same events.
    let play = format!("/play {r}");
    let replay = shell(&["-H", "-c", &play, peer.socket_str()], "", cache.path());
    assert_eq!(replay.status.code(), Some(0), "{}", show(&replay));
    let replayed = text(&replay.stdout);
    assert!(
        replayed.contains("\"event\": \"STOP\"}") && replayed.contains("\"event\": \"RESUME\"}"),
        "{}",
        show(&replay)
    );
    // Without -H: refused, nothing sent.
    let log = dir.path().join("log");
    let out = shell(
        &["-l", log.to_str().unwrap(), "-c", &play, peer.socket_str()],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: /play: {r} holds HMP commands, as its header says: play it with qmp-shell -H\n"
        )
    );
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains("\"stop\""),
        "{}",
        show(&out)
    );
    // A QMP recording, played with -H: refused too.
    let qmp_rec = dir.path().join("qmp.qmp");
    let q = qmp_rec.to_str().unwrap();
    let out = shell(
        &[peer.socket_str()],
        &format!("/record {q}\nquery-name\n"),
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = shell(
        &["-H", "-c", &format!("/play {q}"), peer.socket_str()],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: /play: {q} holds QMP commands, as its header says: play it without -H or -N\n"
        )
    );
    // --read-only in HMP mode: refused before anything is done.
    let ro_rec = dir.path().join("ro.qmp");
    let never = dir.path().join("never-created");
    let out = shell(
        &["-H", "--read-only", "--exit-status", peer.socket_str()],
        &format!(
            "/record {}\nstop\n/oob migrate-pause\n/fd {} getfd fdname=x\n/jobs\ninfo status\n\
             cpu x\n",
            ro_rec.display(),
            never.display()
        ),
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: refused by --read-only: stop may change the VM; it was not sent\n\
         ERROR: refused by --read-only: migrate-pause may change the VM; it was not sent\n\
         ERROR: refused by --read-only: getfd may change the VM; it was not sent\n"
    );
    assert!(!never.exists());
    assert_eq!(status_of(peer.second_socket())["return"]["running"], true);
    let (_, rest) = recording(&ro_rec);
    assert_eq!(
        rest,
        format!(
            "# not sent: stop\n# not sent: /oob migrate-pause\n\
             # not sent: /fd {} getfd fdname=x\n/jobs\ninfo status\n# not sent: cpu x\n",
            never.display()
        )
    );
}

/// `/play` of a file that ends inside a transaction (or a raw JSON
/// message) ends it with the file, a failed command, as end of input
/// does: the next line is a command again. Played twice, and after an
/// error.
#[test]
fn play_ends_what_its_file_left_open() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open_tx = dir.path().join("tx.qmp");
    std::fs::write(
        &open_tx,
        "transaction(\nblock-dirty-bitmap-add node=n0 name=b0\n",
    )
    .unwrap();
    let open_raw = dir.path().join("raw.qmp");
    std::fs::write(&open_raw, "query-name\n{\"execute\":\n").unwrap();
    let (t, r) = (open_tx.display(), open_raw.display());
    let script = format!(
        "blockdev-add driver=null-co node-name=n0\n\
         /play {}/missing.qmp\n\
         /play {t}\n\
         query-status\n\
         /play {t}\n\
         /play {r}\n\
         stop\n",
        dir.path().display()
    );
    let out = shell(&["--exit-status", peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "ERROR: /play: cannot read {0}/missing.qmp: [Errno 2] No such file or directory\n\
             ERROR: /play: {t} ends inside a transaction: 1 action not sent\n\
             ERROR: /play: {t} ends inside a transaction: 1 action not sent\n\
             ERROR: /play: {r} ends inside a raw JSON message; it was not sent\n",
            dir.path().display()
        ),
        "{}",
        show(&out)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\"status\": \"running\""), "{stdout}");
    // blockdev-add, query-name in the raw file, stop.
    assert_eq!(stdout.matches("{\"return\": {}}").count(), 3, "{stdout}");
    // `stop` ran: it was not swallowed by the file's transaction.
    assert_eq!(status_of(peer.second_socket())["return"]["running"], false);
}

/// `--read-only` decides before anything is done: `/fd PATH` creates no
/// file for a refused command, and `-v` does not echo what is not sent.
#[test]
fn read_only_refuses_before_anything_is_done() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.img");
    let fd = format!("/fd {} add-fd fdset-id=1", path.display());
    let out = shell(
        &[
            "--read-only",
            "-v",
            "-c",
            &fd,
            "-c",
            "stop",
            "-c",
            "query-name",
            peer.socket_str(),
        ],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(!path.exists(), "/fd created {}", path.display());
    assert_eq!(
        text(&out.stderr),
        "ERROR: refused by --read-only: add-fd may change the VM; it was not sent\n\
         ERROR: refused by --read-only: stop may change the VM; it was not sent\n"
    );
    assert_eq!(
        text(&out.stdout),
        "{\"execute\": \"query-name\", \"arguments\": {}}\n{\"return\": {}}\n"
    );
}

#[test]
fn exit_on_error_sends_nothing_after_the_failure() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let out = shell(
        &["-e", peer.socket_str()],
        "query-name\nno-such-command\nstop\nquery-status\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("CommandNotFound"), "{stdout}");
    assert!(!stdout.contains("\"status\""), "{stdout}");
    // `stop` was never sent: QEMU still runs.
    assert_eq!(status_of(peer.second_socket())["return"]["running"], true);
    // A line that does not parse stops it too.
    let out = shell(
        &["-e", peer.socket_str()],
        "query-name bad\nstop\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(status_of(peer.second_socket())["return"]["running"], true);
}

// ---------------------------------------------------------------------------
// /oob and /fd
// ---------------------------------------------------------------------------

#[test]
fn oob_commands() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let out = shell(
        &[
            "-c",
            "/oob query-yank",
            "-c",
            "/oob migrate-pause",
            "-c",
            "/oob query-status",
            "-c",
            r#"{"exec-oob": "query-yank"}"#,
            peer.socket_str(),
        ],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "{}", show(&out));
    assert!(lines[0]["return"].is_array(), "{}", show(&out));
    assert_eq!(
        lines[1]["error"]["desc"],
        "migrate-pause is currently only supported during postcopy-active state"
    );
    assert!(lines[2]["return"].is_array(), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: /oob: query-status cannot run out of band (its allow-oob is false in the QMP \
         schema; these can: migrate-pause, migrate-recover, query-yank, yank)\n"
    );
}

#[test]
fn a_file_passed_with_fd_is_written_by_qemu() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; 65536]).unwrap();
    let script = format!(
        "/fd {} add-fd fdset-id=5\n\
         blockdev-add driver=file filename=/dev/fdset/5 node-name=f0\n\
         human-monitor-command command-line='qemu-io f0 \"write -P 0x5a 4096 512\"'\n\
         blockdev-del node-name=f0\n",
        file.display()
    );
    let out = shell(&["--exit-status", peer.socket_str()], &script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"fdset-id\": 5"),
        "{}",
        show(&out)
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes[4096..4608].iter().all(|b| *b == 0x5a),
        "QEMU's write is in the file"
    );
    assert!(bytes[..4096].iter().all(|b| *b == 0));
}

#[test]
fn fd_over_tcp_fails_cleanly_and_the_session_goes_on() {
    let (_peer, port) = qemu_tcp4_monitor();
    let cache = tempfile::tempdir().unwrap();
    let out = shell(
        &[
            "-c",
            "/fd /dev/null add-fd fdset-id=1",
            "-c",
            "query-name",
            &format!("127.0.0.1:{port}"),
        ],
        "",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: /fd: this connection cannot pass file descriptors (only a UNIX socket can)\n"
    );
    assert_eq!(text(&out.stdout), "{\"return\": {}}\n");
}

// ---------------------------------------------------------------------------
// --read-only and deprecation warnings
// ---------------------------------------------------------------------------

#[test]
fn read_only_refuses_what_could_change_the_vm() {
    let peer = Peer::qemu_two_monitors(&["-M", "none"]);
    let cache = tempfile::tempdir().unwrap();
    let out = shell(
        &["--read-only", peer.socket_str()],
        "query-status\nstop\nhuman-monitor-command command-line=stop\n\
         human-monitor-command command-line=\"info status\"\n{\"execute\": \"stop\"}\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: refused by --read-only: stop may change the VM; it was not sent\n\
         ERROR: refused by --read-only: human-monitor-command may change the VM; it was not sent\n\
         ERROR: refused by --read-only: stop may change the VM; it was not sent\n"
    );
    assert!(
        text(&out.stdout).contains("VM status: running"),
        "{}",
        show(&out)
    );
    assert_eq!(status_of(peer.second_socket())["return"]["running"], true);
    // HMP mode: only info.
    let out = shell(
        &["-H", "--read-only", "--exit-status", peer.socket_str()],
        "stop\ninfo status\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("VM status: running"),
        "{}",
        show(&out)
    );
    assert_eq!(status_of(peer.second_socket())["return"]["running"], true);
}

#[test]
fn deprecated_and_unstable_commands_get_a_warning_once() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let script = "query-status\nnbd-server-add device=x\nnbd-server-add device=y\n\
                  nbd-server-remove name=x\ndrive-backup device=x target=/dev/null sync=full\n\
                  x-query-roms\nquery-name\n";
    let out = shell(&[peer.socket_str()], script, cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "warning: command nbd-server-add is deprecated (QMP schema)\n\
         warning: command nbd-server-remove is deprecated (QMP schema)\n\
         warning: command drive-backup is deprecated (QMP schema)\n\
         warning: command x-query-roms is unstable (QMP schema)\n"
    );
    // The facts were cached on disk (mode 0600, in a 0700 directory)...
    use std::os::unix::fs::PermissionsExt;
    let dir = cache.path().join("qmp-shell");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    // ... and are what the next session uses: marked by hand, query-name
    // now gets a warning without the schema being fetched again.
    let path = files[0].path();
    let mut facts: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    facts["builds"][0]["facts"]["marked"]["query-name"] = serde_json::json!({"mark": "deprecated"});
    std::fs::write(&path, serde_json::to_vec(&facts).unwrap()).unwrap();
    let out = shell(&["-c", "query-name", peer.socket_str()], "", cache.path());
    assert_eq!(
        text(&out.stderr),
        "warning: command query-name is deprecated (QMP schema)\n"
    );
}

/// A relay between the shell and a real QEMU that notes, for every line
/// the shell sends, how many lines QEMU had sent it by then: a command
/// sent with the number 2 went out right after the greeting and the reply
/// to `qmp_capabilities`, with no question of the shell's own answered in
/// between. One connection.
struct Relay {
    path: std::path::PathBuf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(usize, Value)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn new(upstream: &Path) -> Relay {
        use std::io::{BufRead, BufReader, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let upstream = upstream.to_owned();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let server = UnixStream::connect(&upstream).unwrap();
            let forwarded = Arc::new(AtomicUsize::new(0));
            let (mut to_client, from_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let counter = Arc::clone(&forwarded);
            let down = std::thread::spawn(move || {
                let mut lines = BufReader::new(from_server);
                let mut line = Vec::new();
                while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    // Counted before the shell can see it.
                    counter.fetch_add(1, Ordering::SeqCst);
                    if to_client.write_all(&line).is_err() {
                        break;
                    }
                    line.clear();
                }
                let _ = to_client.shutdown(std::net::Shutdown::Write);
            });
            let mut to_server = server;
            let mut lines = BufReader::new(client);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let msg: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                noted
                    .lock()
                    .unwrap()
                    .push((forwarded.load(Ordering::SeqCst), msg));
                if to_server.write_all(&line).is_err() {
                    break;
                }
                line.clear();
            }
            let _ = to_server.shutdown(std::net::Shutdown::Both);
            let _ = down.join();
        });
        Relay {
            path,
            seen,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn socket_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// What the shell sent, once it is gone: each message with the number
    /// of lines QEMU had sent before it.
    fn sent(mut self) -> Vec<(usize, Value)> {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// What went out after `qmp_capabilities`, until the first command named
/// `name`, with the lines QEMU had sent before each.
fn before_and_at(sent: &[(usize, Value)], name: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, msg) in sent {
        let command = msg["execute"].as_str().unwrap_or("?").to_owned();
        if command == "qmp_capabilities" {
            continue;
        }
        out.push((*n, command.clone()));
        if command == name {
            return out;
        }
    }
    panic!("{name} was not sent: {sent:?}");
}

/// With the facts of this QEMU cached, the deprecation warning comes and
/// the user's first command goes out right after the reply to
/// `qmp_capabilities`, with `-c`, on a pipe, and twice in a row; the
/// command list is checked in the background only once a second command
/// went out.
#[test]
fn cached_warnings_cost_no_round_trip_before_the_first_command() {
    let peer = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let warning = "warning: command nbd-server-add is deprecated (QMP schema)\n";
    let out = shell(
        &["-c", "nbd-server-add device=x", peer.socket_str()],
        "",
        cache.path(),
    );
    assert_eq!(text(&out.stderr), warning, "{}", show(&out));
    for round in 0..2 {
        let relay = Relay::new(peer.socket());
        let out = shell(
            &["-c", "nbd-server-add device=x", relay.socket_str()],
            "",
            cache.path(),
        );
        assert_eq!(text(&out.stderr), warning, "round {round}: {}", show(&out));
        let sent = relay.sent();
        assert_eq!(
            before_and_at(&sent, "nbd-server-add"),
            [(2, "nbd-server-add".to_owned())],
            "round {round}: {sent:?}"
        );
        assert_eq!(sent.len(), 2, "nothing else was asked: {sent:?}");
    }
    let relay = Relay::new(peer.socket());
    let out = shell(
        &[relay.socket_str()],
        "nbd-server-add device=x\nquery-name\nnbd-server-remove name=x\n",
        cache.path(),
    );
    assert_eq!(
        text(&out.stderr),
        format!("{warning}warning: command nbd-server-remove is deprecated (QMP schema)\n"),
        "{}",
        show(&out)
    );
    let sent = relay.sent();
    assert_eq!(
        before_and_at(&sent, "nbd-server-add"),
        [(2, "nbd-server-add".to_owned())],
        "{sent:?}"
    );
    let names: Vec<&str> = sent
        .iter()
        .filter_map(|(_, m)| m["execute"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "qmp_capabilities",
            "nbd-server-add",
            "query-commands",
            "query-name",
            "nbd-server-remove"
        ],
        "{sent:?}"
    );
}

/// With nothing cached for this QEMU (a cold cache), the user's first
/// command still goes out right after the reply to `qmp_capabilities`,
/// with `-c` and on a pipe: the facts are fetched after it, and its
/// deprecation warning still comes before its reply (stdout and stderr
/// in one pipe).
#[test]
fn a_cold_cache_costs_no_round_trip_before_the_first_command() {
    let peer = Peer::qemu_none();
    let warning = "warning: command nbd-server-add is deprecated (QMP schema)";
    for (args, stdin) in [
        (vec!["-c", "nbd-server-add device=x"], ""),
        (vec![], "nbd-server-add device=x\nquery-name\n"),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let relay = Relay::new(peer.socket());
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "exec \"$0\" \"$@\" 2>&1"]).arg(ours());
        let mut all = args.clone();
        all.push(relay.socket_str());
        let out = run_program_env(
            cmd,
            &all,
            stdin,
            SHELL_TIMEOUT,
            &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
        );
        let merged = text(&out.stdout);
        let (Some(warned), Some(replied)) = (merged.find(warning), merged.find("\"error\"")) else {
            panic!("{args:?}: no warning or no reply: {merged}");
        };
        assert!(
            warned < replied,
            "{args:?}: the warning after the reply: {merged}"
        );
        assert_eq!(merged.matches(warning).count(), 1, "{args:?}: {merged}");
        let sent = relay.sent();
        assert_eq!(
            before_and_at(&sent, "nbd-server-add"),
            [(2, "nbd-server-add".to_owned())],
            "{args:?}: {sent:?}"
        );
        // The facts were cached all the same: the next session warns too.
        let out = shell(
            &["-c", "nbd-server-add device=x", peer.socket_str()],
            "",
            cache.path(),
        );
        assert_eq!(text(&out.stderr), format!("{warning}\n"), "{}", show(&out));
    }
}

/// The storage daemon and the emulator of one QEMU version and package
/// share a cache file, each build under its own command list: `/wait`
/// knows which events this very server has, and the warnings hold for
/// both, in either order.
#[test]
fn the_cache_tells_builds_of_one_version_apart() {
    let qsd = Peer::storage_daemon();
    let vm = Peer::qemu_none();
    let cache = tempfile::tempdir().unwrap();
    let warning = "warning: command nbd-server-add is deprecated (QMP schema)\n";
    let out = shell(
        &["-c", "nbd-server-add device=x", qsd.socket_str()],
        "",
        cache.path(),
    );
    assert_eq!(text(&out.stderr), warning, "{}", show(&out));
    // The emulator has STOP, whatever the daemon's facts say.
    let out = shell(
        &["--exit-status", vm.socket_str()],
        "stop\n/wait STOP\ncont\n",
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"event\": \"STOP\""),
        "{}",
        show(&out)
    );
    let out = shell(
        &["-c", "nbd-server-add device=x", vm.socket_str()],
        "",
        cache.path(),
    );
    assert_eq!(text(&out.stderr), warning, "{}", show(&out));
    // The daemon has none, whatever the emulator's facts (now first) say.
    let out = shell(&["-c", "/wait STOP", qsd.socket_str()], "", cache.path());
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "ERROR: /wait: the server has no event named STOP\n",
        "{}",
        show(&out)
    );
    let out = shell(
        &["-c", "nbd-server-add device=y", qsd.socket_str()],
        "",
        cache.path(),
    );
    assert_eq!(text(&out.stderr), warning, "{}", show(&out));
    let files: Vec<_> = std::fs::read_dir(cache.path().join("qmp-shell"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file: Value = serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap();
    assert_eq!(file["builds"].as_array().map(Vec::len), Some(2), "{file}");
}
