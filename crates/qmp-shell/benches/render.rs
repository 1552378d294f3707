//! Rendering speed for a large reply shaped like `query-qmp-schema`.
//!
//! The value is generated here (about 200 KB of compact JSON), so the bench
//! does not depend on QEMU. Besides rendering the tree of values, the
//! `text_` figures render straight from the reply's text
//! ([`render::from_text`]), and `tree_` ones what that replaces: reading
//! the text into a tree, rendering it and dropping it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qmp_shell::render::{self, Style};
use serde_json::{json, Map, Value};

/// A `{"return": [...]}` reply resembling QEMU's schema introspection:
/// commands, events, objects with members, enums, arrays and builtins.
fn schema_reply() -> Value {
    let mut entries = Vec::new();
    let mut i = 0u32;
    while entries.len() < 1400 {
        let name = format!("{i}");
        let entry = match i % 6 {
            0 => json!({
                "name": format!("query-thing-{i}"),
                "ret-type": format!("{}", i + 1),
                "meta-type": "command",
                "arg-type": "0",
                "allow-oob": i % 12 == 0,
            }),
            1 => json!({
                "name": name,
                "members": [
                    {"name": "id", "type": "str"},
                    {"name": "size", "type": "int", "default": null},
                    {"name": "enabled", "type": "bool"},
                    {"name": "ratio", "type": "number", "features": ["deprecated"]},
                    {"name": "description\u{e9}", "type": format!("{}", i + 2)},
                ],
                "meta-type": "object",
            }),
            2 => json!({
                "name": name,
                "meta-type": "enum",
                "values": ["running", "paused", "shutdown", "io-error", "watchdog", "guest-panicked"],
                "members": [
                    {"name": "running"}, {"name": "paused"}, {"name": "shutdown"},
                    {"name": "io-error"}, {"name": "watchdog"}, {"name": "guest-panicked"},
                ],
            }),
            3 => json!({
                "name": format!("EVENT_{i}"),
                "meta-type": "event",
                "arg-type": format!("{}", i + 3),
            }),
            4 => json!({"name": format!("[{i}]"), "element-type": name, "meta-type": "array"}),
            _ => json!({
                "name": "int",
                "json-type": "int",
                "meta-type": "builtin",
                "limits": {"min": -9_223_372_036_854_775_808i64, "max": 18_446_744_073_709_551_615u64, "scale": 1.5e-7},
                "doc": "Tab\tnewline\n \"quoted\" \\ unicode \u{4e2d}\u{1f600}",
            }),
        };
        entries.push(entry);
        i += 1;
    }
    let mut reply = Map::new();
    reply.insert("return".to_owned(), Value::Array(entries));
    reply.insert("id".to_owned(), json!("schema"));
    Value::Object(reply)
}

fn bench_render(c: &mut Criterion) {
    let value = schema_reply();
    let compact_len = render::to_string(&value, Style::default()).len();
    let mut group = c.benchmark_group("render_schema");
    group.throughput(Throughput::Bytes(u64::try_from(compact_len).unwrap_or(0)));
    for (label, style) in [
        (
            "compact",
            Style {
                pretty: false,
                color: false,
            },
        ),
        (
            "pretty",
            Style {
                pretty: true,
                color: false,
            },
        ),
        (
            "pretty_color",
            Style {
                pretty: true,
                color: true,
            },
        ),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| render::to_string(black_box(&value), style));
        });
    }
    let mut out = String::with_capacity(4 * compact_len);
    group.bench_function("compact_reused_buffer", |b| {
        b.iter(|| {
            out.clear();
            render::write_into(&mut out, black_box(&value), Style::default());
            out.len()
        });
    });
    let text = serde_json::to_vec(&value).unwrap_or_default();
    for (label, pretty) in [("compact", false), ("pretty", true)] {
        let style = Style {
            pretty,
            color: false,
        };
        group.bench_function(format!("tree_{label}_parse_render_drop"), |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&text)).unwrap_or_default();
                render::to_string(&v, style).len()
            });
        });
        group.bench_function(format!("text_{label}"), |b| {
            b.iter(|| render::from_text(black_box(&text), style, Some("id")).map(|t| t.len()));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
