//! A tonic codec that leaves messages encoded (requests stay `Bytes` end to end), and the gzip
//! compression every exporter's requests share.

use std::io::Write;

use bytes::{Buf, BufMut, Bytes};
use sluice_core::ExportError;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A codec whose messages are their own encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The compression encodings sluice's gRPC servers accept: gzip (the only one the OTLP
/// specification requires).
pub fn accept_gzip() -> tonic::codec::EnabledCompressionEncodings {
    let mut encodings = tonic::codec::EnabledCompressionEncodings::default();
    encodings.enable(tonic::codec::CompressionEncoding::Gzip);
    encodings
}

/// Requests above this size are compressed on the blocking pool, off the async workers.
const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// `data` gzip-compressed at the fast level, on the blocking pool when it is large (compressing
/// a batch of megabytes takes milliseconds of CPU).
///
/// # Errors
/// A permanent [`ExportError`] when compression fails or its task dies.
pub async fn gzip(data: Bytes) -> Result<Bytes, ExportError> {
    if data.len() > BLOCKING_THRESHOLD {
        tokio::task::spawn_blocking(move || gzip_here(&data))
            .await
            .map_err(|e| ExportError::permanent(format!("gzip task failed: {e}")))?
    } else {
        gzip_here(&data)
    }
}

/// [`gzip`] on the calling thread.
pub(crate) fn gzip_here(data: &[u8]) -> Result<Bytes, ExportError> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(data)
        .and_then(|()| e.finish())
        .map(Bytes::from)
        .map_err(|err| ExportError::permanent(format!("gzip failed: {err}")))
}
