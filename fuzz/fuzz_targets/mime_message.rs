//! A received message's bytes, as anyone can send them: MIME structure, transfer
//! encodings, charsets, headers, HTML. Nothing may panic, and the text kept stays
//! within its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let m = contactd_email::parse(data);
    assert!(m.text.chars().count() <= contactd_email::parse::MAX_TEXT_CHARS);
    let _ = contactd_email::subject::tag(&m.subject);
    let _ = contactd_email::parse::html_to_text(&String::from_utf8_lossy(data));
});
