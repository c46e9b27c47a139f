//! The receivers' intake: the wire walker's validation of a request (as traces, the seeds' and
//! the name's signal, and as metrics and logs too), then, for what it admits, the item view and
//! every batch operation a processor or connector uses (count, split, group, an edit that
//! decodes each item).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_core::view::{Context, Item};
use sluice_core::{Batch, Signal, wire};

fuzz_target!(|request: &[u8]| {
    for signal in Signal::ALL {
        intake(signal, request);
    }
});

fn intake(signal: Signal, request: &[u8]) {
    let _ = wire::validate_and_count(signal, request);
    let Ok((kept, inspection)) = wire::checked(signal, Bytes::copy_from_slice(request)) else {
        return;
    };
    // What the intake admits must walk cleanly through everything after it.
    assert_eq!(wire::count(signal, &kept), inspection.items);
    let mut batch = Batch::from_trusted(signal, kept, inspection.items);
    let tail = batch.split_off(inspection.items / 2);
    assert_eq!(batch.items() + tail.items(), inspection.items);
    let mut n = 0usize;
    let groups = tail.group_by(|_: &Context<'_>, _: &Item<'_>| {
        n += 1;
        n % 3
    });
    let regrouped: usize = groups.iter().map(|(_, b)| b.items()).sum();
    assert_eq!(regrouped, inspection.items - inspection.items / 2);
    let kept = batch.retain(|_, item| match item {
        Item::Span(span) => !span.decode().name.is_empty(),
        Item::Log(log) => log.decode().severity_number % 2 == 0,
        Item::Point(_) => true,
    });
    assert_eq!(wire::count(signal, kept.data()), kept.items());
}
