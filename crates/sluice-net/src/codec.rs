//! A tonic codec that leaves messages encoded (requests stay `Bytes` end to end), and the
//! compression every exporter's requests and the capped decompression every received body share.

use std::io::{Read, Write};

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

/// `data` gzip-compressed at the fast level, on the calling thread: exporters compress in their
/// `encode`, which the exporter helper runs once per batch, off the async workers when the batch
/// is large.
///
/// # Errors
/// A permanent [`ExportError`] when compression fails.
pub fn gzip(data: &[u8]) -> Result<Bytes, ExportError> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(data)
        .and_then(|()| e.finish())
        .map(Bytes::from)
        .map_err(|err| ExportError::permanent(format!("gzip failed: {err}")))
}

/// A content coding sluice reads: gzip (the one OTLP requires) or zlib `deflate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// gzip, including concatenated members.
    Gzip,
    /// zlib-wrapped deflate, as HTTP's `deflate` means.
    Deflate,
}

impl Coding {
    /// The name HTTP and gRPC give it.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// Decompresses `body` into at most `limit` bytes; `Ok(None)` when the output would exceed it,
/// so a small bomb cannot become a large allocation.
///
/// # Errors
/// The decoder's error when `body` is not valid `coding`.
pub fn decompress(coding: Coding, body: &[u8], limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let reader: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
    };
    reader
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompression_is_capped() {
        let bomb = gzip(&vec![0u8; 10 << 20]).unwrap();
        assert!(bomb.len() < 100 << 10);
        assert_eq!(decompress(Coding::Gzip, &bomb, 1 << 20).unwrap(), None);
        assert_eq!(
            decompress(Coding::Gzip, &bomb, 20 << 20)
                .unwrap()
                .unwrap()
                .len(),
            10 << 20
        );
        assert!(decompress(Coding::Gzip, b"not gzip", 100).is_err());
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(b"hello").unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            decompress(Coding::Deflate, &zlib, 5).unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(decompress(Coding::Deflate, &zlib, 4).unwrap(), None);
    }
}
