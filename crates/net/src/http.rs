//! HTTP GETs of an origin — a manifest, an outboard, a range of a file — for verified swarms,
//! trusting what the signaling connection trusts (Mozilla's roots and `--ca`). Blocking ureq
//! on tokio's blocking pool; every body has a size limit.

use std::io::Read as _;
use std::path::Path;

use crate::Error;
use crate::signaling::Trust;

/// An HTTP client for an origin.
#[derive(Debug, Clone)]
pub struct Http {
    agent: ureq::Agent,
}

/// Why a GET failed, in words (the status, or what went wrong on the way).
#[derive(Debug, thiserror::Error)]
#[error("{url}: {why}")]
pub struct HttpError {
    pub url: String,
    pub why: String,
    /// The status, when the server answered.
    pub status: Option<u16>,
}

impl Http {
    pub fn new(ca: Option<&Path>) -> Result<Http, Error> {
        Ok(Http {
            agent: Trust::load(ca)?.agent,
        })
    }

    /// The body of `url`, at most `limit` bytes.
    pub async fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
        self.fetch(url, None, limit).await
    }

    /// Bytes `start..=end` of `url`: a `Range` request; a server that ignores it (200) is read
    /// up to the end of the range and no further.
    pub async fn range(&self, url: &str, start: u64, end: u64) -> Result<Vec<u8>, HttpError> {
        self.fetch(url, Some((start, end)), end - start + 1).await
    }

    async fn fetch(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
        limit: u64,
    ) -> Result<Vec<u8>, HttpError> {
        let agent = self.agent.clone();
        let owned = url.to_owned();
        let fail = |why: String, status: Option<u16>| HttpError {
            url: owned.clone(),
            why,
            status,
        };
        let url2 = url.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut req = agent.get(&url2);
            if let Some((a, b)) = range {
                req = req.header("Range", &format!("bytes={a}-{b}"));
            }
            let res = req.call().map_err(|e| match e {
                ureq::Error::StatusCode(code) => (format!("HTTP {code}"), Some(code)),
                other => (other.to_string(), None),
            })?;
            let status = res.status().as_u16();
            let mut reader = res.into_body().into_reader();
            let mut skip = match (range, status) {
                (Some(_), 206) | (None, _) => 0,
                (Some((a, _)), 200) => a,
                _ => return Err((format!("HTTP {status}"), Some(status))),
            };
            // Skipped in pieces: a server that ignores Range sends from the start.
            let mut sink = vec![0; 64 * 1024];
            while skip > 0 {
                let n = reader
                    .read(&mut sink[..skip.min(64 * 1024) as usize])
                    .map_err(|e| (e.to_string(), None))?;
                if n == 0 {
                    return Err(("the body ended before the range".into(), None));
                }
                skip -= n as u64;
            }
            let mut body = Vec::new();
            reader
                .take(limit + 1)
                .read_to_end(&mut body)
                .map_err(|e| (e.to_string(), None))?;
            if range.is_none() && body.len() as u64 > limit {
                return Err((format!("larger than {limit} bytes"), None));
            }
            body.truncate(limit as usize);
            Ok(body)
        })
        .await
        .map_err(|e| fail(e.to_string(), None))?
        .map_err(|(why, status)| fail(why, status))
    }
}
