//! Connect to a QMP socket, print the QEMU version and the `query-status` result.
//!
//! Usage: `cargo run -p qmp-client --example query_status -- /path/to/qmp.sock`
//! (a `HOST:PORT` address works too).

use std::process::ExitCode;
use std::time::Duration;

use qmp_client::{Address, Client, ClientOptions};

fn main() -> ExitCode {
    let Some(arg) = std::env::args().nth(1) else {
        eprintln!("usage: query_status SOCKET-PATH|HOST:PORT");
        return ExitCode::from(2);
    };
    let addr: Address = match arg.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let client = match Client::connect(&addr, ClientOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Couldn't connect to {addr}: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    match client.greeting().and_then(|g| g.version()) {
        Some((major, minor, micro)) => println!("QEMU version: {major}.{minor}.{micro}"),
        None => println!("QEMU version: unknown"),
    }
    match client.execute("query-status", None, Some(Duration::from_secs(10))) {
        Ok(reply) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reply.body).unwrap_or_else(|e| e.to_string())
            );
            if reply.is_error() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("query-status failed: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, `error: cause: cause...`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
