//! A datagram as a stranger could send it to the SIP listener: parsed as the stack
//! parses it, then read the way contactd reads an INVITE (strict identity headers, the
//! SDP offer). Nothing may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The SDP reader alone, on any text.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = contactd_sip::sdp::negotiate(text);
    }
    let Ok(message) = rsipstack::sip::SipMessage::try_from(data) else {
        return;
    };
    if let rsipstack::sip::SipMessage::Request(request) = message {
        for trusted in [true, false] {
            let _ = contactd_sip::identity::CallIdentity::parse(&request, trusted);
        }
        let offer = String::from_utf8_lossy(&request.body);
        if let Ok(n) = contactd_sip::sdp::negotiate(&offer) {
            let _ = contactd_sip::sdp::answer(&n, "127.0.0.1".parse().unwrap(), 20000, 1, 1);
        }
    }
});
