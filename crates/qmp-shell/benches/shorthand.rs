//! Parsing speed of the shorthand command language (`NAME KEY=VALUE...`).
//!
//! Three typical shapes: a `blockdev-add` with dotted keys (nested objects),
//! a line carrying a big JSON value, and a three-line transaction.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qmp_shell::shorthand::{Parsed, Parser};

const BLOCKDEV_ADD: &str = "blockdev-add driver=qcow2 node-name=disk0 \
    file.driver=file file.filename=/var/lib/images/disk0.qcow2 \
    file.aio=threads file.locking=off cache.direct=true cache.no-flush=false \
    discard=unmap read-only=false detect-zeroes=unmap";

const TRANSACTION: [&str; 3] = [
    "transaction(",
    "block-dirty-bitmap-add node=disk0 name=bitmap0 persistent=true granularity=65536",
    "blockdev-snapshot-sync device=disk0 snapshot-file=/tmp/snap.qcow2 format=qcow2 )",
];

/// `object-add` with a JSON list of 200 objects (about 14 KB on one line;
/// no spaces, which would split the value into several tokens).
fn big_json_line() -> String {
    let mut items = Vec::new();
    for i in 0..200 {
        items.push(format!(
            r#"{{"name":"item-{i}","size":{size},"enabled":{en},"tags":["a","b"],"ratio":0.{i}}}"#,
            size = i * 4096,
            en = if i % 2 == 0 { "true" } else { "false" },
        ));
    }
    format!(
        "object-add qom-type=secret id=s0 data=[{}]",
        items.join(",")
    )
}

fn parse_one(parser: &mut Parser, line: &str) -> Parsed {
    parser.parse_line(line).expect("the bench lines parse")
}

fn bench_shorthand(c: &mut Criterion) {
    let mut group = c.benchmark_group("shorthand");

    group.throughput(Throughput::Bytes(BLOCKDEV_ADD.len() as u64));
    group.bench_function("blockdev-add dotted keys", |b| {
        let mut parser = Parser::new();
        b.iter(|| black_box(parse_one(&mut parser, black_box(BLOCKDEV_ADD))))
    });

    let big = big_json_line();
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("big JSON value", |b| {
        let mut parser = Parser::new();
        b.iter(|| black_box(parse_one(&mut parser, black_box(&big))))
    });

    let bytes: usize = TRANSACTION.iter().map(|l| l.len()).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("transaction", |b| {
        let mut parser = Parser::new();
        b.iter(|| {
            let mut last = Parsed::Empty;
            for line in TRANSACTION {
                last = parse_one(&mut parser, black_box(line));
            }
            assert!(matches!(last, Parsed::Command(_)));
            black_box(last)
        })
    });

    group.finish();
}

criterion_group!(benches, bench_shorthand);
criterion_main!(benches);
