//! A webhook body as anyone on the internet could post it: the form parser and the
//! inbound-text and status-report readers behind it, before any signature check.
//! Nothing may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(params) = contactd_sms::webhook::form_params(data) else {
        return;
    };
    let _ = contactd_sms::InboundSms::parse(&params);
    let _ = contactd_sms::StatusReport::parse(&params);
    let _ = contactd_sms::signature::compute("token", "https://example.org/hook", &params);
});
