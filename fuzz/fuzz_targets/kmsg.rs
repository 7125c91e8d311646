//! /dev/kmsg: records, the verdict classifier and the report assembler,
//! fed a stream of records split out of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_kmsg::{classify, context_of, parse_record, Assembler};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut asm = Assembler::new();
    for raw in selfheal_kmsg::record::split_records(&text) {
        let _ = classify(raw);
        let _ = context_of(raw);
        if let Some(rec) = parse_record(raw) {
            for report in asm.push(&rec) {
                let _ = report.to_event();
            }
        }
    }
    if let Some(r) = asm.flush() {
        let _ = r.to_event();
    }
});
