//! Time N pipelined `query-status` commands over a transport: all written
//! (by a writer thread), then all replies read, after the greeting and
//! `qmp_capabilities`. Compares a local socket with the same socket reached
//! through ssh.
//!
//! ```text
//! cargo run --release -p qmp-client --example ssh_pipeline -- ADDRESS [N] [RUNS] [serial]
//! ```
//!
//! ADDRESS is a UNIX socket path or `ssh://[USER@]HOST[:PORT]/PATH` (ssh run
//! as `$QMP_SSH_COMMAND` says). N defaults to 2000, RUNS to 5; each run is a
//! new connection, timed separately (connect, greeting and negotiation),
//! and the medians are printed last. With `serial`, each command waits for
//! the previous reply (round-trip latency instead of throughput).

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Instant;

use qmp_client::transport::ssh::{SshOptions, SshTransport};
use qmp_client::transport::{Halves, Received, Source, Transport};
use qmp_client::{Address, Object, StreamTransport};

fn open(addr: &Address) -> Result<Box<dyn Transport>, String> {
    match addr {
        Address::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|e| format!("{addr}: {e}"))?;
            Ok(Box::new(
                StreamTransport::unix(stream).map_err(|e| e.to_string())?,
            ))
        }
        Address::Ssh { .. } => {
            let opts = SshOptions::from_env().map_err(|e| e.to_string())?;
            Ok(Box::new(
                SshTransport::connect_address(addr, &opts).map_err(|e| e.to_string())?,
            ))
        }
        Address::Tcp { .. } => Err("this example takes a UNIX path or ssh:// address".into()),
    }
}

fn next(source: &mut dyn Source) -> Result<Object, String> {
    match source.receive(&mut |_| {}) {
        Ok(Some(Received::Frame(Ok(obj)))) => Ok(obj),
        Ok(Some(other)) => Err(format!("unexpected {other:?}")),
        Ok(None) => Err("connection closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `query-status` with `id`: `{"execute":"query-status","id":ID}`.
fn query_status(id: u64) -> Object {
    let mut msg = qmp_client::command("query-status", None);
    msg.insert("id".to_owned(), id.into());
    msg
}

/// One run: time connecting and negotiating, then `n` commands.
fn run(addr: &Address, n: u64, serial: bool) -> Result<(f64, f64), String> {
    let connect_start = Instant::now();
    let Halves {
        mut source,
        mut sink,
        closer,
    } = open(addr)?.split().map_err(|e| e.to_string())?;
    let greeting = next(&mut *source)?;
    if !greeting.contains_key("QMP") {
        return Err(format!("not a QMP greeting: {greeting:?}"));
    }
    let caps = qmp_client::command("qmp_capabilities", None);
    sink.send(&caps, &qmp_client::encode(&caps), &[])
        .map_err(|e| e.to_string())?;
    next(&mut *source)?;
    let connect_ms = connect_start.elapsed().as_secs_f64() * 1000.0;

    let start = Instant::now();
    if serial {
        for id in 0..n {
            let msg = query_status(id);
            sink.send(&msg, &qmp_client::encode(&msg), &[])
                .map_err(|e| e.to_string())?;
            while !next(&mut *source)?.contains_key("return") {}
        }
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        closer();
        return Ok((connect_ms, elapsed));
    }
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for id in 0..n {
            let msg = query_status(id);
            sink.send(&msg, &qmp_client::encode(&msg), &[])?;
        }
        Ok(())
    });
    let mut replies = 0;
    while replies < n {
        let reply = next(&mut *source)?;
        if reply.contains_key("return") {
            replies += 1;
        } else if !reply.contains_key("event") {
            return Err(format!("unexpected reply {reply:?}"));
        }
    }
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    writer
        .join()
        .map_err(|_| "writer panicked".to_owned())?
        .map_err(|e| e.to_string())?;
    closer();
    Ok((connect_ms, elapsed))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(text) = args.first() else {
        eprintln!("usage: ssh_pipeline ADDRESS [N] [RUNS]");
        return ExitCode::from(2);
    };
    let addr: Address = match text.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let serial = args.get(3).is_some_and(|s| s == "serial");
    let mode = if serial { "serial" } else { "pipelined" };
    let mut times = Vec::new();
    let mut connects = Vec::new();
    for i in 0..runs {
        match run(&addr, n, serial) {
            Ok((connect_ms, ms)) => {
                println!(
                    "run {}: connected in {connect_ms:.1} ms, {n} {mode} commands in {ms:.1} ms",
                    i + 1
                );
                times.push(ms);
                connects.push(connect_ms);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    times.sort_by(f64::total_cmp);
    connects.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        let median = times[times.len() / 2];
        println!(
            "{addr}: {n} {mode} commands: median {median:.1} ms ({min:.1}-{max:.1}), \
             {:.1} us/command; connect median {:.1} ms",
            median * 1000.0 / n as f64,
            connects[connects.len() / 2]
        );
    }
    ExitCode::SUCCESS
}
