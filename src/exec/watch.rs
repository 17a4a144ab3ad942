//! What a step's output is watched for as it passes, without holding it: the lines of a test
//! runner's JUnit XML between the marker lines (hidden from the terminal, kept for `--junit`),
//! and signs of a TLS certificate that could not be verified (so a failure can say how to give
//! the container a CA bundle). Raw output is watched in chunks and passed on byte for byte;
//! only a line that could be a marker waits for its end.

use crate::outcome::{Document, JUNIT_BEGIN, JUNIT_END};

/// The most of a test runner's document kept: more than any real report (pytest writes about
/// 300 bytes a test), and small enough that a runaway output cannot exhaust memory.
pub(super) const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// A line longer than this is not a marker (the markers are about 30 bytes; the slack allows
/// for indentation and a carriage return).
const MAX_MARKER_LINE: usize = 256;

/// What OpenSSL, Python's ssl module, pip, requests, npm and curl print when a certificate does
/// not verify; matched as plain substrings.
const TLS_SIGNS: [&str; 5] = [
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "SELF_SIGNED_CERT_IN_CHAIN",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "unable to get local issuer certificate",
];

/// The longest sign, less one: what is kept from a chunk to find a sign split across two.
const TLS_OVERLAP: usize = 37;

/// Watches one stream of a step's output.
pub(super) struct Watch {
    /// Whether this stream may carry markers (a step's stdout); stderr is watched for TLS only.
    markers: bool,
    /// Keep the documents (`--junit`); without it they are hidden all the same.
    collect: bool,
    /// The start of the current line while it could still be a marker.
    line: Vec<u8>,
    /// The current line is no marker: the rest of it passes as it comes.
    long_line: bool,
    /// Inside a document: what was kept of it so far, and whether it outgrew the limit.
    document: Option<(Vec<u8>, bool)>,
    pub documents: Vec<Document>,
    pub tls_rejected: bool,
    /// The end of what was last scanned for TLS signs.
    tls_tail: Vec<u8>,
}

impl Watch {
    /// A watch for a step's stdout, keeping documents when `collect`.
    pub fn stdout(collect: bool) -> Watch {
        Watch::new(true, collect)
    }

    /// A watch for a stream that carries no documents (stderr).
    pub fn tls_only() -> Watch {
        Watch::new(false, false)
    }

    fn new(markers: bool, collect: bool) -> Watch {
        Watch {
            markers,
            collect,
            line: Vec::new(),
            long_line: false,
            document: None,
            documents: Vec::new(),
            tls_rejected: false,
            tls_tail: Vec::new(),
        }
    }

    /// Takes a chunk of raw output and appends to `show` what the terminal should get.
    pub fn chunk(&mut self, mut chunk: &[u8], show: &mut Vec<u8>) {
        let from = show.len();
        if !self.markers {
            self.scan_tls(chunk);
            show.extend_from_slice(chunk);
            return;
        }
        while !chunk.is_empty() {
            let end = chunk.iter().position(|b| *b == b'\n');
            let (piece, rest) = chunk.split_at(end.map_or(chunk.len(), |at| at + 1));
            chunk = rest;
            if self.long_line {
                self.pass(piece, show);
            } else {
                self.line.extend_from_slice(piece);
                if end.is_some() {
                    let line = std::mem::take(&mut self.line);
                    self.whole_line(&line, show);
                } else if !could_be_marker(&self.line) {
                    // A prompt or a progress bar is shown now, not when its line ends.
                    let start = std::mem::take(&mut self.line);
                    self.long_line = true;
                    self.pass(&start, show);
                }
            }
            if end.is_some() {
                self.long_line = false;
            }
        }
        // Scanned once per chunk, not per line: raw output can be large.
        self.scan_shown(show, from);
    }

    /// Takes one whole line (prefixed output is read line by line) and says whether to show it.
    pub fn line(&mut self, line: &[u8]) -> bool {
        let mut show = Vec::new();
        self.whole_line(line, &mut show);
        self.scan_shown(&show, 0);
        !show.is_empty()
    }

    /// The end of the stream: a line left without its line break, a document without its end.
    pub fn finish(&mut self, show: &mut Vec<u8>) {
        let from = show.len();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.whole_line(&line, show);
        }
        self.scan_shown(show, from);
        if self.document.take().is_some() && self.collect {
            self.documents.push(Document::Unfinished);
        }
    }

    fn whole_line(&mut self, line: &[u8], show: &mut Vec<u8>) {
        let marker = if self.markers { line.trim_ascii() } else { b"" };
        if self.document.is_none() && marker == JUNIT_BEGIN.as_bytes() {
            self.document = Some((Vec::new(), false));
        } else if self.document.is_some() && marker == JUNIT_END.as_bytes() {
            if let (Some((kept, too_large)), true) = (self.document.take(), self.collect) {
                self.documents.push(if too_large {
                    Document::TooLarge(MAX_DOCUMENT)
                } else {
                    Document::Complete(kept)
                });
            }
        } else {
            self.pass(line, show);
        }
    }

    /// Bytes that are no marker: the document's when inside one, the terminal's otherwise.
    fn pass(&mut self, bytes: &[u8], show: &mut Vec<u8>) {
        match &mut self.document {
            Some((kept, too_large)) => {
                if !self.collect || *too_large {
                    return;
                }
                if kept.len() + bytes.len() > MAX_DOCUMENT {
                    *too_large = true;
                    *kept = Vec::new();
                } else {
                    kept.extend_from_slice(bytes);
                }
            }
            // Only what is shown is scanned for TLS signs: a test named after a TLS error
            // inside a report is not a TLS failure.
            None => show.extend_from_slice(bytes),
        }
    }

    fn scan_shown(&mut self, show: &[u8], from: usize) {
        if let Some(shown) = show.get(from..) {
            self.scan_tls(shown);
        }
    }

    /// Looks for a sign in `bytes` and across its start (the end of what came before).
    fn scan_tls(&mut self, bytes: &[u8]) {
        if self.tls_rejected || bytes.is_empty() {
            return;
        }
        let mut seam = std::mem::take(&mut self.tls_tail);
        seam.extend_from_slice(&bytes[..bytes.len().min(TLS_OVERLAP)]);
        self.tls_rejected = has_tls_sign(&seam) || has_tls_sign(bytes);
        // The seam holds all of a short chunk; of a long one, keep its own end.
        let mut tail = if bytes.len() >= TLS_OVERLAP {
            bytes[bytes.len() - TLS_OVERLAP..].to_vec()
        } else {
            seam
        };
        let keep = tail.len().saturating_sub(TLS_OVERLAP);
        self.tls_tail = tail.split_off(keep);
    }
}

/// Whether `bytes` hold one of the signs. Every sign has "cert" in it (in either case), and
/// most output has none, so one cheap pass usually answers.
fn has_tls_sign(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w.eq_ignore_ascii_case(b"cert"))
        && TLS_SIGNS
            .iter()
            .any(|sign| bytes.windows(sign.len()).any(|w| w == sign.as_bytes()))
}

/// Whether the start of a line may still turn out to be a marker line: blanks, then a prefix of
/// a marker (or a whole one followed by blanks).
fn could_be_marker(start: &[u8]) -> bool {
    let text = start.trim_ascii_start();
    start.len() <= MAX_MARKER_LINE
        && [JUNIT_BEGIN, JUNIT_END].iter().any(|marker| {
            let marker = marker.as_bytes();
            let common = text.len().min(marker.len());
            text[..common] == marker[..common] && text[common..].trim_ascii().is_empty()
        })
}

/// Whether a finished command's whole output shows a TLS verification failure.
pub(super) fn shows_tls_failure(text: &str) -> bool {
    has_tls_sign(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(watch: &mut Watch, chunks: &[&[u8]]) -> Vec<u8> {
        let mut show = Vec::new();
        for chunk in chunks {
            watch.chunk(chunk, &mut show);
        }
        watch.finish(&mut show);
        show
    }

    const OUTPUT: &str = "collected 2 items\n::host_container:junit-begin::\n<testsuites>\n</testsuites>\n::host_container:junit-end::\n2 passed\n";

    #[test]
    fn hides_the_document_and_keeps_it_when_collecting() {
        let mut watch = Watch::stdout(true);
        let show = shown(&mut watch, &[OUTPUT.as_bytes()]);
        assert_eq!(show, b"collected 2 items\n2 passed\n");
        assert!(matches!(
            &watch.documents[..],
            [Document::Complete(doc)] if doc == b"<testsuites>\n</testsuites>\n"
        ));
        let mut hiding = Watch::stdout(false);
        assert_eq!(shown(&mut hiding, &[OUTPUT.as_bytes()]), show);
        assert!(hiding.documents.is_empty());
    }

    #[test]
    fn markers_split_across_chunks_are_still_found() {
        let bytes = OUTPUT.as_bytes();
        for size in [1, 2, 7, 31] {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let mut watch = Watch::stdout(true);
            assert_eq!(shown(&mut watch, &chunks), b"collected 2 items\n2 passed\n");
            assert_eq!(watch.documents.len(), 1, "chunks of {size}");
        }
    }

    #[test]
    fn output_without_markers_passes_byte_for_byte() {
        let long = vec![b'x'; 10 * MAX_MARKER_LINE];
        let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for input in [&long[..], &binary[..], b"no newline at the end", b"\r\n\n"] {
            let chunks: Vec<&[u8]> = input.chunks(100).collect();
            let mut watch = Watch::stdout(true);
            assert_eq!(shown(&mut watch, &chunks), input);
        }
    }

    #[test]
    fn a_line_that_cannot_be_a_marker_is_shown_before_it_ends() {
        let mut watch = Watch::stdout(true);
        let mut show = Vec::new();
        watch.chunk(b"Name? ", &mut show);
        assert_eq!(show, b"Name? ");
        watch.chunk(b"\r 45%", &mut show);
        assert_eq!(show, b"Name? \r 45%");
        show.clear();
        watch.chunk(b"\n  ::host_container:ju", &mut show);
        assert_eq!(
            show, b"\n",
            "a marker's start waits for the rest of its line"
        );
        watch.chunk(b"nit-begin:: \r\nhidden\n", &mut show);
        assert_eq!(show, b"\n");
    }

    #[test]
    fn a_marker_inside_a_long_line_is_text() {
        let line = format!("{}{JUNIT_BEGIN}\nafter\n", "y".repeat(MAX_MARKER_LINE + 1));
        let mut watch = Watch::stdout(true);
        assert_eq!(shown(&mut watch, &[line.as_bytes()]), line.as_bytes());
    }

    #[test]
    fn an_unfinished_or_oversized_document_says_so() {
        let mut watch = Watch::stdout(true);
        shown(
            &mut watch,
            &[b"::host_container:junit-begin::\n<testsuites>\n"],
        );
        assert!(matches!(&watch.documents[..], [Document::Unfinished]));

        let mut watch = Watch::stdout(true);
        let mut show = Vec::new();
        watch.chunk(b"::host_container:junit-begin::\n", &mut show);
        let big = vec![b'z'; 1024 * 1024];
        for _ in 0..=MAX_DOCUMENT / big.len() {
            watch.chunk(&big, &mut show);
        }
        watch.chunk(b"\n::host_container:junit-end::\n", &mut show);
        assert!(show.is_empty());
        assert!(matches!(&watch.documents[..], [Document::TooLarge(_)]));
    }

    #[test]
    fn sees_tls_failures_also_split_across_chunks() {
        let text =
            b"pip: SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] x'))\n";
        for size in [1, 5, 40, text.len()] {
            let mut watch = Watch::tls_only();
            shown(&mut watch, &text.chunks(size).collect::<Vec<_>>());
            assert!(watch.tls_rejected, "chunks of {size}");
        }
        let mut watch = Watch::stdout(true);
        assert!(!watch.line(b"::host_container:junit-begin::\n"));
        watch.line(b"<testcase name=\"test_certificate_verify_failed\"/>\n");
        assert!(!watch.tls_rejected, "inside a report it is a test's name");
        assert!(!watch.line(b"npm ERR! unable to get local issuer certificate\n"));
        assert!(!watch.tls_rejected, "inside the report");
        assert!(!watch.line(b"::host_container:junit-end::\n"));
        assert!(watch.line(b"npm ERR! unable to get local issuer certificate\n"));
        assert!(watch.tls_rejected);
        assert!(shows_tls_failure("x SELF_SIGNED_CERT_IN_CHAIN y"));
    }
}
