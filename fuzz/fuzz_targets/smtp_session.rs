//! An SMTP session as any client on the internet could run it: the command parser,
//! the envelope's state machine, DATA with dot-unstuffing and the size bound, over an
//! in-memory stream carrying the fuzzer's bytes. Nothing may panic or hang.
#![no_main]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use contactd_email::smtp::{MailHandler, NotStored, ReceivedMail, SmtpLimits, converse};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

struct TakeAll;

impl MailHandler for TakeAll {
    fn accepts(&self, recipient: &str) -> bool {
        recipient.ends_with("@council.example")
    }
    fn deliver(
        &self,
        mail: ReceivedMail,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotStored>> + Send + '_>> {
        // What the daemon does next with the bytes: parse them.
        let _ = contactd_email::parse(&mail.raw);
        Box::pin(async { Ok(()) })
    }
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let limits = SmtpLimits {
            max_message_bytes: 4096,
            max_recipients: 5,
            max_connections: 1,
            max_per_source: 1,
            command_timeout: Duration::from_millis(200),
            session_timeout: Duration::from_secs(2),
        };
        let data = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&data).await;
            let _ = client.shutdown().await;
            // Read and drop the replies so the server never blocks on a full pipe.
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut client, &mut sink).await;
        });
        let peer = "192.0.2.1:25".parse().unwrap();
        converse(server, peer, "council.example", &limits, Arc::new(TakeAll)).await;
        let _ = writer.await;
    });
});
