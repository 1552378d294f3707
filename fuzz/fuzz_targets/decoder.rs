//! The QMP frame decoder on arbitrary bytes, fed in chunks.
//!
//! Input layout: byte 0 picks the message size limit, bytes 1..5 are a cycle
//! of chunk sizes (1..=256), the rest is the stream. Checked: no panic or
//! hang; after draining, the decoder holds at most the limit (an oversized
//! frame is discarded, not buffered); and the messages are exactly those
//! that feeding the whole stream at once gives, whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qmp_client::{Decoder, FrameError, Object};

const LIMITS: [usize; 4] = [4096, 16, 100, 1 << 20];

fn drain(d: &mut Decoder, out: &mut Vec<Result<Object, FrameError>>) {
    let mut raws = 0usize;
    while let Some(r) = d.next_message_with_raw(&mut |_| raws += 1) {
        out.push(r);
        // Each call makes progress: never more results than input bytes.
        assert!(out.len() <= 1 << 20);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let (header, stream) = data.split_at(5);
    let max = LIMITS[usize::from(header[0]) % LIMITS.len()];
    let sizes: Vec<usize> = header[1..].iter().map(|&b| usize::from(b) + 1).collect();

    let mut chunked = Decoder::new(max);
    let mut got = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        chunked.feed(chunk);
        assert!(chunked.buffered() <= max + chunk.len());
        drain(&mut chunked, &mut got);
        assert!(
            chunked.buffered() <= max,
            "{} bytes buffered after draining, limit {max}",
            chunked.buffered()
        );
    }
    // Feeding nothing yields nothing new.
    chunked.feed(&[]);
    let before = got.len();
    drain(&mut chunked, &mut got);
    assert_eq!(got.len(), before);

    let mut whole = Decoder::new(max);
    whole.feed(stream);
    let mut expected = Vec::new();
    drain(&mut whole, &mut expected);
    assert!(whole.buffered() <= max);
    assert_eq!(got, expected, "chunking changed the messages");
    assert_eq!(chunked.buffered(), whole.buffered());
});
