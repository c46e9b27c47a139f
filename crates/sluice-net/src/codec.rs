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

/// The compressions a tonic gRPC server (the load generator's sink, test peers) accepts: gzip and
/// zstd. Sluice's own receivers frame gRPC themselves and accept every [`Coding`].
pub fn tonic_accept_encodings() -> tonic::codec::EnabledCompressionEncodings {
    let mut encodings = tonic::codec::EnabledCompressionEncodings::default();
    encodings.enable(tonic::codec::CompressionEncoding::Gzip);
    encodings.enable(tonic::codec::CompressionEncoding::Zstd);
    encodings
}

/// `data` gzip-compressed at the fast level (`flate2` on its `zlib-rs` backend: the fastest
/// candidate measured, `benches/compression.rs`), on the calling thread: exporters compress in their
/// `encode`, which the exporter helper runs once per batch, off the async workers when the batch
/// is large.
///
/// # Errors
/// A permanent [`ExportError`] when compression fails.
pub fn gzip(data: &[u8]) -> Result<Bytes, ExportError> {
    gzip_at(data, 1)
}

/// [`gzip`] at `level` (1 to 9).
pub(crate) fn gzip_at(data: &[u8], level: i32) -> Result<Bytes, ExportError> {
    let level = u32::try_from(level.clamp(1, 9)).unwrap_or(1);
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::new(level),
    );
    e.write_all(data)
        .and_then(|()| e.finish())
        .map(Bytes::from)
        .map_err(|err| ExportError::permanent(format!("gzip failed: {err}")))
}

/// The compressions sluice's receivers accept: what the OpenTelemetry Collector's `confighttp`
/// and `configgrpc` accept, so that clients configured for it work unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// gzip, including concatenated members.
    Gzip,
    /// zlib-wrapped deflate, as HTTP's `deflate` means.
    Deflate,
    /// Zstandard frames.
    Zstd,
    /// Snappy, block format or framed: the Collector's servers tell them apart by the framed
    /// format's stream identifier, and so does sluice.
    Snappy,
    /// Snappy's framed format (`x-snappy-framed`).
    SnappyFramed,
    /// LZ4's frame format (HTTP only, as in the Collector).
    Lz4,
}

impl Coding {
    /// The name HTTP and gRPC give it.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Zstd => "zstd",
            Coding::Snappy => "snappy",
            Coding::SnappyFramed => "x-snappy-framed",
            Coding::Lz4 => "lz4",
        }
    }

    /// The coding an HTTP `Content-Encoding` names (`None` for one sluice does not accept).
    pub fn from_http(name: &str) -> Option<Coding> {
        Some(match name {
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" | "zlib" => Coding::Deflate,
            "zstd" => Coding::Zstd,
            "snappy" => Coding::Snappy,
            "x-snappy-framed" => Coding::SnappyFramed,
            "lz4" => Coding::Lz4,
            _ => return None,
        })
    }

    /// The coding a `grpc-encoding` names (`None` for one sluice does not accept).
    pub fn from_grpc(name: &str) -> Option<Coding> {
        Some(match name {
            "gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "zstd" => Coding::Zstd,
            "snappy" => Coding::Snappy,
            _ => return None,
        })
    }
}

/// The `grpc-accept-encoding` of sluice's gRPC servers.
pub const GRPC_ACCEPT_ENCODING: &str = "gzip,deflate,zstd,snappy";

/// The stream identifier chunk that opens Snappy's framed format.
const SNAPPY_STREAM: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// The largest Zstandard window a decoder may allocate for an output of at most `limit` bytes:
/// a frame declaring a larger window is refused rather than allowed to allocate it.
fn zstd_window_log(limit: usize) -> u32 {
    let log = usize::BITS - limit.max(1).leading_zeros();
    log.clamp(10, 27)
}

/// A body that is one Zstandard frame declaring its size, decompressed in one call into a buffer
/// of exactly that size (no window to allocate), with a decompression context kept per thread:
/// a streaming decoder made per request cost more than decompressing a typical request. `None`
/// for other bodies (several frames, or no declared size), which the streaming decoder reads.
fn zstd_whole(body: &[u8], limit: usize) -> Option<std::io::Result<Option<Vec<u8>>>> {
    use std::cell::RefCell;
    thread_local! {
        static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }
    let size = zstd::zstd_safe::get_frame_content_size(body).ok()??;
    if zstd::zstd_safe::find_frame_compressed_size(body).ok()? != body.len() {
        return None;
    }
    let size = match usize::try_from(size) {
        Ok(size) if size <= limit => size,
        _ => return Some(Ok(None)),
    };
    Some(CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        if context.is_none() {
            *context = Some(zstd::bulk::Decompressor::new()?);
        }
        let decompressor = context
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no context"))?;
        let mut out = Vec::with_capacity(size);
        decompressor.decompress_to_buffer(body, &mut out)?;
        if out.len() == size {
            Ok(Some(out))
        } else {
            Err(std::io::Error::other(format!(
                "the zstd frame declares {size} bytes and holds {}",
                out.len()
            )))
        }
    }))
}

/// Decompresses `body` into at most `limit` bytes; `Ok(None)` when the output would exceed it,
/// so a small bomb cannot become a large allocation.
///
/// # Errors
/// The decoder's error when `body` is not valid `coding`.
pub fn decompress(coding: Coding, body: &[u8], limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let framed = coding == Coding::SnappyFramed
        || (coding == Coding::Snappy && body.starts_with(SNAPPY_STREAM));
    if coding == Coding::Snappy && !framed {
        // The block format declares its length up front: check it before allocating.
        let len = snap::raw::decompress_len(body).map_err(std::io::Error::other)?;
        if len > limit {
            return Ok(None);
        }
        return snap::raw::Decoder::new()
            .decompress_vec(body)
            .map(Some)
            .map_err(std::io::Error::other);
    }
    if coding == Coding::Zstd
        && let Some(whole) = zstd_whole(body, limit)
    {
        return whole;
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let reader: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
        Coding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body)?;
            decoder.window_log_max(zstd_window_log(limit))?;
            Box::new(decoder)
        }
        Coding::Snappy | Coding::SnappyFramed => Box::new(snap::read::FrameDecoder::new(body)),
        Coding::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
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

    /// `data` compressed with `coding`, as a client would send it.
    fn compressed(coding: Coding, data: &[u8]) -> Vec<u8> {
        match coding {
            Coding::Gzip => gzip(data).unwrap().to_vec(),
            Coding::Deflate => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Coding::Zstd => zstd::bulk::compress(data, 3).unwrap(),
            Coding::Snappy => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            Coding::SnappyFramed => {
                let mut e = snap::write::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.into_inner().unwrap()
            }
            Coding::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    #[test]
    fn every_coding_round_trips_and_no_bomb_gets_past_its_cap() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let zeros = vec![0u8; 32 << 20];
        for coding in [
            Coding::Gzip,
            Coding::Deflate,
            Coding::Zstd,
            Coding::Snappy,
            Coding::SnappyFramed,
            Coding::Lz4,
        ] {
            let body = compressed(coding, &text);
            assert_eq!(
                decompress(coding, &body, text.len()).unwrap().as_deref(),
                Some(&text[..]),
                "{coding:?}"
            );
            assert_eq!(
                decompress(coding, &body, text.len() - 1).unwrap(),
                None,
                "{coding:?}"
            );
            // 32 MiB of zeros in a small body: refused at a 1 MiB cap, never expanded.
            let bomb = compressed(coding, &zeros);
            assert!(bomb.len() < 2 << 20, "{coding:?}: {}", bomb.len());
            assert_eq!(
                decompress(coding, &bomb, 1 << 20).unwrap(),
                None,
                "{coding:?}"
            );
            assert!(
                decompress(coding, b"\x05garbage, not a compressed body", 1 << 20).is_err(),
                "{coding:?}"
            );
        }
        // Framed Snappy under the name `snappy` is recognised by its stream identifier.
        let framed = compressed(Coding::SnappyFramed, &text);
        assert_eq!(
            decompress(Coding::Snappy, &framed, text.len())
                .unwrap()
                .as_deref(),
            Some(&text[..])
        );
        assert_eq!(
            Coding::from_http("x-snappy-framed"),
            Some(Coding::SnappyFramed)
        );
        assert_eq!(
            Coding::from_grpc("lz4"),
            None,
            "lz4 is HTTP only, as in the Collector"
        );
    }

    #[test]
    fn zstd_frames_that_declare_their_size_and_those_that_do_not_decode_alike() {
        let one = zstd::bulk::compress(b"first frame, ", 3).unwrap();
        let two = zstd::bulk::compress(b"second frame", 3).unwrap();
        // One frame with its size: decoded in one call.
        assert_eq!(
            decompress(Coding::Zstd, &one, 100).unwrap().unwrap(),
            b"first frame, "
        );
        // Two frames: the streaming decoder reads both.
        let both = [one.as_slice(), two.as_slice()].concat();
        assert_eq!(
            decompress(Coding::Zstd, &both, 100).unwrap().unwrap(),
            b"first frame, second frame"
        );
        assert_eq!(decompress(Coding::Zstd, &both, 20).unwrap(), None);
        // A frame cut short is an error, not a short body.
        assert!(decompress(Coding::Zstd, &one[..one.len() - 2], 100).is_err());
    }

    #[test]
    fn a_zstd_frame_cannot_make_the_decoder_allocate_a_large_window() {
        // A streamed frame (no content size) declaring a 128 MiB window: the decoder would have
        // to allocate the window whatever the frame holds. Its 4 KiB of content fit the 64 KiB
        // cap, so only the window cap can refuse it.
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.window_log(27).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.write_all(&[7u8; 4096]).unwrap();
        let frame = encoder.finish().unwrap();
        let err = decompress(Coding::Zstd, &frame, 64 << 10).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("memory"), "{err}");
        // With a cap allowing that window, the same frame decodes.
        assert_eq!(
            decompress(Coding::Zstd, &frame, 200 << 20)
                .unwrap()
                .unwrap()
                .len(),
            4096
        );
        assert_eq!(zstd_window_log(64 << 10), 17);
        assert_eq!(zstd_window_log(usize::MAX), 27);
    }
}
