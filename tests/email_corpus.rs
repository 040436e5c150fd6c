//! A corpus of the mail residents and their mail systems really send
//! (`tests/email_corpus/`): multipart of every kind, charsets right and wrong,
//! attachments, HTML only, broken MIME, huge headers. Every message parses without a
//! panic, keeps its words, and is recognised for what it is.

use std::path::Path;

use contactd_email::{InboundEmail, parse, subject};

fn corpus(name: &str) -> InboundEmail {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/email_corpus")
        .join(name);
    parse(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn every_message_in_the_corpus_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/email_corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let raw = std::fs::read(entry.unwrap().path()).unwrap();
        let m = parse(&raw);
        assert!(m.text.chars().count() <= contactd_email::parse::MAX_TEXT_CHARS);
        seen += 1;
    }
    assert!(seen >= 19, "the corpus is all there");
}

#[test]
fn text_comes_from_the_text_part_or_the_html() {
    assert!(
        corpus("plain_utf8.eml")
            .text
            .contains("missed — again. Café")
    );
    assert!(
        corpus("alternative.eml")
            .text
            .contains("There is a pothole — deep one.")
    );
    let html = corpus("html_only.eml");
    assert!(html.text.contains("Streetlight out"), "{}", html.text);
    assert!(
        !html.text.contains("alert(1)") && !html.text.contains("color:red"),
        "{}",
        html.text
    );
    let related = corpus("related_cid_image.eml");
    assert!(
        related.text.contains("Rubbish dumped here"),
        "{}",
        related.text
    );
}

#[test]
fn charsets_are_decoded_or_kept_never_dropped() {
    let latin1 = corpus("latin1.eml");
    assert!(latin1.text.contains("café, £50"), "{}", latin1.text);
    assert_eq!(latin1.subject, "Café licence");
    let cp1252 = corpus("cp1252_mislabelled.eml");
    // Labelled ISO-8859-1, written in Windows-1252: read as the latter, as browsers do.
    assert!(
        cp1252
            .text
            .contains("\u{201c}residents only\u{201d} sign cost \u{20ac}20"),
        "{}",
        cp1252.text
    );
    assert!(corpus("iso2022jp.eml").text.contains("ごみが収集"));
    assert_eq!(corpus("iso2022jp.eml").subject, "ごみの収集");
    assert!(corpus("gb2312.eml").text.contains("垃圾没有收集"));
    let korean = corpus("ks_c_5601.eml");
    assert!(korean.text.contains("쓰레기 수거"), "{}", korean.text);
    assert!(corpus("unknown_charset.eml").text.contains("Plain words"));
}

#[test]
fn odd_structures_are_survived() {
    let mixed = corpus("mixed_attachment.eml");
    assert_eq!(mixed.attachments.len(), 1);
    assert_eq!(mixed.attachments[0].name, "form.pdf");
    assert_eq!(mixed.attachments[0].content_type, "application/pdf");
    assert!(mixed.attachments[0].bytes.starts_with(b"%PDF-1.4"));
    assert!(corpus("winmail_dat.eml").text.contains("See attached"));
    assert_eq!(corpus("winmail_dat.eml").attachments[0].name, "winmail.dat");
    let smime = corpus("smime_opaque.eml");
    assert_eq!(smime.message_id.as_deref(), Some("<smime@example.org>"));
    let broken = corpus("broken_mime.eml");
    assert_eq!(broken.message_id.as_deref(), Some("<broken@example.org>"));
    let links = corpus("many_links.eml");
    assert!(links.text.contains("link 1999"));
    let huge = corpus("huge_headers.eml");
    assert_eq!(subject::tag(&huge.subject), Some("SR-1000002"));
    assert!(huge.answers.len() <= 100);
    assert!(huge.text.contains("Body after huge headers"));
}

#[test]
fn automatic_mail_and_reports_are_recognised() {
    assert_eq!(
        corpus("out_of_office.eml").automatic,
        Some("Auto-Submitted")
    );
    let dsn = corpus("dsn_bounce.eml");
    assert!(dsn.delivery_report);
    assert!(dsn.automatic.is_some());
    let quoted = corpus("no_message_id_quoted.eml");
    assert_eq!(quoted.message_id, None);
    assert_eq!(
        subject::tag(&quoted.subject),
        None,
        "a reference only in quoted text is no tag"
    );
    assert_eq!(corpus("plain_utf8.eml").automatic, None);
}

#[test]
fn a_thirty_megabyte_message_is_parsed_and_its_text_bounded() {
    let mut raw =
        b"From: a@example.org\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    let line = b"All work and no play makes a very long message indeed.\r\n";
    while raw.len() < 30 * 1024 * 1024 {
        raw.extend_from_slice(line);
    }
    let m = parse(&raw);
    assert_eq!(
        m.text.chars().count(),
        contactd_email::parse::MAX_TEXT_CHARS
    );
}
