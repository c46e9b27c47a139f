//! The OTLP/HTTP receiver's request decoding: Content-Type and Content-Encoding (picked by the
//! first two bytes, or taken raw), decompression within a limit, the OTLP/JSON transcoder, then
//! the intake's validation of what comes out. A refusal must be 400, 413 or 415.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_core::{Signal, wire};

const TYPES: [&[u8]; 4] = [
    b"application/json",
    b"application/x-protobuf",
    b"application/json; charset=utf-8",
    b"text/plain",
];
const CODINGS: [Option<&[u8]>; 8] = [
    None,
    Some(b"gzip"),
    Some(b"deflate"),
    Some(b"zstd"),
    Some(b"snappy"),
    Some(b"x-snappy-framed"),
    Some(b"lz4"),
    Some(b"br"),
];

fuzz_target!(|data: &[u8]| {
    let [pick, kind, coding, body @ ..] = data else {
        return;
    };
    let signal = Signal::ALL[usize::from(*pick) % Signal::ALL.len()];
    let content_type = TYPES[usize::from(*kind) % TYPES.len()];
    let coding = CODINGS[usize::from(*coding) % CODINGS.len()];
    match sluice_otlp::decode_request(
        signal,
        content_type,
        coding,
        Bytes::copy_from_slice(body),
        1 << 20,
    ) {
        Ok(request) => {
            let _ = wire::checked(signal, request);
        }
        Err(refusal) => {
            assert!(matches!(refusal.status, 400 | 413 | 415), "{refusal}");
            assert!(!refusal.message.is_empty());
        }
    }
});
