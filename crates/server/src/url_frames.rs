//! A new session's first frames in the WebSocket's URL (`GET /ws?frames=<JSON array>`): the
//! hub handles them before the socket's first frame and the upgrade's response says so
//! (`peerweb-frames: taken`), so the client's hello and join cost no round trip of their own.
//! What does not qualify is ignored (no header): the client then sends its frames on the
//! socket as usual, so an older server and a newer client still meet.

/// The response header that says the frames were taken.
pub(crate) const TAKEN_HEADER: &str = "peerweb-frames";

/// Frames in one URL at most (a hello and a join: two).
pub(crate) const MAX_FRAMES: usize = 4;
/// Bytes of the decoded `frames` value at most.
pub(crate) const MAX_BYTES: usize = 4096;

/// The frames of `query`'s `frames` parameter, if it qualifies: a JSON array of at most
/// [`MAX_FRAMES`] objects, at most [`MAX_BYTES`] (and `max_frame` bytes) long, whose first is
/// a `hello` without a resume token (tokens stay out of URLs and the logs that keep them).
/// Each frame's text then goes to the core as if read from the socket: the core checks it
/// as any other.
pub(crate) fn parse(query: Option<&str>, max_frame: usize) -> Option<Vec<String>> {
    let value = form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "frames")
        .map(|(_, v)| v)?;
    if value.len() > MAX_BYTES.min(max_frame) {
        return None;
    }
    let frames: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&value).ok()?;
    if frames.is_empty() || frames.len() > MAX_FRAMES {
        return None;
    }
    let first = &frames[0];
    if first.get("type").and_then(|t| t.as_str()) != Some("hello") || first.contains_key("token") {
        return None;
    }
    frames
        .into_iter()
        .map(|f| serde_json::to_string(&f).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(frames: &str) -> String {
        format!(
            "access_token=x&frames={}",
            form_urlencoded::byte_serialize(frames.as_bytes()).collect::<String>()
        )
    }

    #[test]
    fn a_hello_and_a_join_are_taken_and_anything_else_is_left_to_the_socket() {
        let ok = r#"[{"type":"hello","v":1,"acks":true},{"type":"join","room":"r"}]"#;
        let got = parse(Some(&q(ok)), 65_536).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[1].contains(r#""room":"r""#));
        // Not taken: no parameter, not JSON, not an array of objects, empty, too many, too
        // long (for the URL or for the server's frame limit), not a hello first, a token.
        let hello = r#"{"type":"hello","v":1}"#;
        let five = format!("[{}]", [hello; 5].join(","));
        let long = format!(
            r#"[{{"type":"hello","v":1,"pad":"{}"}}]"#,
            "x".repeat(MAX_BYTES)
        );
        for bad in [
            "{",
            r#"{"type":"hello","v":1}"#,
            "[1,2]",
            "[]",
            five.as_str(),
            long.as_str(),
            r#"[{"type":"join","room":"r"},{"type":"hello","v":1}]"#,
            r#"[{"type":"hello","v":1,"token":"abc"}]"#,
        ] {
            assert_eq!(parse(Some(&q(bad)), 65_536), None, "{bad}");
        }
        assert_eq!(parse(None, 65_536), None);
        assert_eq!(parse(Some("access_token=x"), 65_536), None);
        assert_eq!(parse(Some(&q(ok)), 40), None, "over the frame limit");
    }
}
