//! Property tests of the frame decoder: the messages do not depend on how
//! the stream is cut into reads, the size limit is applied per message
//! whatever the cuts, and no input makes it panic or hoard memory.

use proptest::prelude::*;
use qmp_client::{encode, Decoder, FrameError, Object};
use serde_json::{Map, Number, Value};

/// JSON values whose strings are full of the characters the frame scanner
/// tracks (quotes, backslashes, brackets), nested up to 3 deep.
fn json_value() -> impl Strategy<Value = Value> {
    let string = prop_oneof![any::<String>(), "[a-z\"\\\\{}\\[\\] \\n\\r\\t:,é😀]{0,12}",];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        "-?[1-9][0-9]{19,40}".prop_map(|t| Value::Number(t.parse::<Number>().unwrap())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        string.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((string.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn message() -> impl Strategy<Value = Object> {
    prop::collection::vec(("[a-z\"{}\\\\]{0,8}", json_value()), 0..5)
        .prop_map(|kv| kv.into_iter().collect::<Object>())
}

/// How a message is put on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire {
    /// `qmp_client::encode`: compact, `\n`.
    Encode,
    /// QEMU's way: `\r\n` after the object.
    Crlf,
    /// Pretty-printed over several lines, no terminator (back to back).
    PrettyBare,
    /// Leading whitespace, no terminator.
    SpacedBare,
}

fn wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        Just(Wire::Encode),
        Just(Wire::Crlf),
        Just(Wire::PrettyBare),
        Just(Wire::SpacedBare)
    ]
}

/// The bytes of `msg` on the wire, and the length of the frame the decoder
/// measures against its limit (the object itself, whitespace excluded).
fn put(msg: &Object, how: Wire) -> (Vec<u8>, usize) {
    match how {
        Wire::Encode => {
            let bytes = encode(msg);
            let len = bytes.len() - 1;
            (bytes, len)
        }
        Wire::Crlf => {
            let mut bytes = serde_json::to_vec(msg).unwrap();
            let len = bytes.len();
            bytes.extend_from_slice(b"\r\n");
            (bytes, len)
        }
        Wire::PrettyBare => {
            let bytes = serde_json::to_vec_pretty(msg).unwrap();
            let len = bytes.len();
            (bytes, len)
        }
        Wire::SpacedBare => {
            let mut bytes = b" \t\r\n ".to_vec();
            let body = serde_json::to_vec(msg).unwrap();
            let len = body.len();
            bytes.extend_from_slice(&body);
            (bytes, len)
        }
    }
}

/// Feed `stream` cut at `cuts` (any order, any values: taken modulo the
/// length), draining after every feed. Checks the buffer stays bounded.
fn decode(stream: &[u8], cuts: &[usize], limit: usize) -> Vec<Result<Object, FrameError>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % (stream.len() + 1))
        .chain([0, stream.len()])
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut d = Decoder::new(limit);
    let mut out = Vec::new();
    for w in points.windows(2) {
        let chunk = &stream[w[0]..w[1]];
        d.feed(chunk);
        assert!(d.buffered() <= limit + chunk.len());
        while let Some(r) = d.next_message() {
            out.push(r);
        }
        assert!(
            d.buffered() <= limit,
            "{} buffered, limit {limit}",
            d.buffered()
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn messages_do_not_depend_on_chunking(
        msgs in prop::collection::vec((message(), wire()), 0..6),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for (m, how) in &msgs {
            stream.extend(put(m, *how).0);
        }
        let got = decode(&stream, &cuts, 1 << 20);
        let want: Vec<Result<Object, FrameError>> =
            msgs.iter().map(|(m, _)| Ok(m.clone())).collect();
        prop_assert_eq!(&got, &want);
        // One byte at a time, too.
        let every: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(decode(&stream, &every, 1 << 20), want);
    }

    #[test]
    fn the_limit_applies_per_message_whatever_the_cuts(
        msgs in prop::collection::vec((message(), wire()), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
        limit in 2usize..200,
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (m, how) in &msgs {
            let (bytes, len) = put(m, *how);
            stream.extend(bytes);
            want.push(if len <= limit {
                Ok(m.clone())
            } else {
                Err(FrameError::TooLarge { limit })
            });
        }
        prop_assert_eq!(decode(&stream, &cuts, limit), want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_does_not_matter(
        stream in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
        limit in prop_oneof![Just(8usize), Just(64), Just(4096)],
    ) {
        let whole = decode(&stream, &[], limit);
        prop_assert_eq!(decode(&stream, &cuts, limit), whole);
    }

    #[test]
    fn json_ish_soup_never_panics(
        stream in "[{}\\[\\]\"\\\\ \\n\\r:,a1]{0,300}",
        cuts in prop::collection::vec(any::<usize>(), 0..30),
        limit in prop_oneof![Just(4usize), Just(32), Just(4096)],
    ) {
        let whole = decode(stream.as_bytes(), &[], limit);
        prop_assert_eq!(decode(stream.as_bytes(), &cuts, limit), whole);
    }
}
