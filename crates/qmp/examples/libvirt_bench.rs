//! Time `query-status` through libvirt: N sequential commands through the
//! libvirt transport (one connection), against N runs of
//! `virsh qemu-monitor-command DOMAIN '{"execute":"query-status"}'` (one
//! process, and so one connection, per command).
//!
//! ```sh
//! cargo run --release -p qmp-client --example libvirt_bench -- DOMAIN [COUNT] [URI]
//! ```
//!
//! COUNT defaults to 500, URI to `qemu:///system`. Prints the time per
//! command of each (mean and median), then the ratio.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qmp_client::transport::libvirt::{LibvirtTransport, DEFAULT_URI};
use qmp_client::transport::{Received, Transport};

fn main() {
    if let Err(e) = run() {
        eprintln!("libvirt_bench: {e}");
        std::process::exit(1);
    }
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / samples.len().max(1) as u32;
    let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
    (mean, median)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let domain = args
        .next()
        .ok_or("usage: libvirt_bench DOMAIN [COUNT] [URI]")?;
    let count: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 500,
    };
    let uri = args.next().unwrap_or_else(|| DEFAULT_URI.to_owned());
    if count == 0 {
        return Err("COUNT must be at least 1".into());
    }

    // Through the transport: one connection, commands one after another.
    let open_start = Instant::now();
    let t = LibvirtTransport::open(Some(&uri), &domain, false)?;
    let open_time = open_start.elapsed();
    let mut halves = Box::new(t).split()?;
    let cmd = qmp_client::command("query-status", None);
    let encoded = qmp_client::encode(&cmd);
    let mut ours = Vec::with_capacity(count);
    while ours.len() < count {
        let start = Instant::now();
        halves.sink.send(&cmd, &encoded, &[])?;
        loop {
            match halves.source.receive(&mut |_| {})? {
                Some(Received::Frame(Ok(obj))) if obj.contains_key("return") => break,
                Some(Received::Frame(Ok(obj))) if obj.contains_key("error") => {
                    return Err(format!("error reply: {}", serde_json::to_string(&obj)?).into())
                }
                Some(_) => continue, // an event
                None => return Err("the session ended".into()),
            }
        }
        ours.push(start.elapsed());
    }
    (halves.closer)();

    // virsh, one process per command.
    let mut virsh = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let status = Command::new("virsh")
            .args(["-c", &uri, "qemu-monitor-command", &domain])
            .arg(r#"{"execute":"query-status"}"#)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("virsh failed: {status}").into());
        }
        virsh.push(start.elapsed());
    }

    let (om, omed) = stats(ours);
    let (vm, vmed) = stats(virsh);
    println!("query-status x {count} on domain {domain} ({uri})");
    println!(
        "transport (one connection): mean {} median {} per command (open: {})",
        ms(om),
        ms(omed),
        ms(open_time)
    );
    println!(
        "virsh qemu-monitor-command: mean {} median {} per command",
        ms(vm),
        ms(vmed)
    );
    println!(
        "transport is {:.1}x faster (by mean)",
        vm.as_secs_f64() / om.as_secs_f64().max(1e-9)
    );
    Ok(())
}
