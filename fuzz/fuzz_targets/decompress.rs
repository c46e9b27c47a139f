//! Every decompressor a receiver accepts, within a size limit: never more than the limit comes
//! out, whatever the input claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_net::{Coding, decompress};

const NAMES: [&str; 6] = ["gzip", "deflate", "zstd", "snappy", "x-snappy-framed", "lz4"];
const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Some(coding) = Coding::from_http(NAMES[usize::from(pick) % NAMES.len()]) else {
        return;
    };
    if let Ok(Some(out)) = decompress(coding, body, LIMIT) {
        assert!(out.len() <= LIMIT, "{} bytes out of {coding:?}", out.len());
    }
});
