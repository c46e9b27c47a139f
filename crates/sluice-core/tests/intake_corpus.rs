//! The fuzz seed corpus of the intake (`fuzz/corpus/intake_traces`): inputs that once made
//! sluice acknowledge data no exporter could decode. Every file must keep the intake's promise:
//! what it accepts decodes with prost, whole and one resource at a time; files named `valid_*`
//! are accepted whole, every other file has something refused.

use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use sluice_core::{Signal, wire};

#[test]
fn every_seed_is_refused_or_decodes_everywhere() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/intake_traces");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        seen += 1;
        let Ok(inspection) = wire::inspect(Signal::Traces, &bytes) else {
            assert!(!name.starts_with("valid_"), "{name} is refused");
            continue;
        };
        if name.starts_with("valid_") {
            assert_eq!(inspection.rejected, 0, "{name}: {inspection:?}");
        } else {
            assert!(
                inspection.rejected > 0
                    || ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok(),
                "{name} is accepted whole but does not decode"
            );
        }
        let kept = wire::retain_valid(Signal::Traces, &bytes);
        let decoded = ExportTraceServiceRequest::decode(kept.clone())
            .unwrap_or_else(|e| panic!("{name}: what the intake keeps does not decode: {e}"));
        let spans: usize = decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(spans, inspection.items, "{name}");
        for message in wire::resource_messages(&kept) {
            ResourceSpans::decode(message.unwrap()).unwrap();
        }
    }
    assert!(
        seen >= 10,
        "the corpus at {} has {seen} files",
        dir.display()
    );
}
