//! SDK-HMAC-SHA256 request signing, as the official Huawei Cloud SDK does it (README, "Credentials"; checked against
//! the SDK's own signatures in the tests).
//!
//! The same functions sign the exporter's requests and verify them in the simulator, so the
//! two can only agree by agreeing with the SDK's vectors (`tests` below check all five).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::digest::{SHA256, digest};
use ring::hmac;

/// The algorithm name that opens the string to sign and the Authorization header.
pub(crate) const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// `X-Sdk-Date` format (UTC).
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// RFC 3986 unreserved characters stay as they are; everything else is encoded.
pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a signature covers.
pub struct Request<'a, H: AsRef<str> = String> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The resource path, not percent-encoded (`/v1/{project}/jobs/{id}`).
    pub path: &'a str,
    /// Query parameters, not encoded, in any order.
    pub query: &'a [(String, String)],
    /// The headers to sign, as (name, value); names in any case.
    pub headers: &'a [(H, H)],
    /// The body.
    pub body: &'a [u8],
}

/// hex(sha256("")): every GET the exporter sends has an empty body.
const EMPTY_BODY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The headers that are signed, sorted by lowercased name; a name given twice keeps its first
/// value, and names containing `_` are left out, as the SDK does.
fn signed<H: AsRef<str>>(headers: &[(H, H)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .filter(|(n, _)| !n.contains('_'))
        .collect();
    // Stable, so of equal names the first given stays first and survives the dedup.
    out.sort_by(|a, b| {
        a.0.bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.0.bytes().map(|c| c.to_ascii_lowercase()))
    });
    out.dedup_by(|later, first| later.0.eq_ignore_ascii_case(first.0));
    out
}

fn push_lowercase(out: &mut String, name: &str) {
    out.extend(name.chars().map(|c| c.to_ascii_lowercase()));
}

fn push_names(out: &mut String, signed: &[(&str, &str)]) {
    for (i, (name, _)) in signed.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        push_lowercase(out, name);
    }
}

fn push_hex(out: &mut String, digest: &[u8]) {
    let mut buf = [0u8; 64];
    let hex = &mut buf[..digest.len() * 2];
    if hex::encode_to_slice(digest, hex).is_ok() {
        out.push_str(std::str::from_utf8(hex).unwrap_or_default());
    }
}

/// The signed-header names of `headers`: lowercased, sorted, `;`-joined, without names
/// containing `_`.
pub fn signed_headers<H: AsRef<str>>(headers: &[(H, H)]) -> String {
    let mut out = String::with_capacity(64);
    push_names(&mut out, &signed(headers));
    out
}

/// The canonical request, as the SDK builds it.
///
/// Built in one buffer: signing runs once per upstream request, and the version that collected
/// names and values into owned strings spent more time allocating than hashing (a
/// profile of a 10,000-job refresh).
pub fn canonical_request<H: AsRef<str>>(req: &Request<'_, H>) -> String {
    let mut out = String::with_capacity(320);
    out.push_str(req.method);
    out.push('\n');
    for seg in req.path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(utf8_percent_encode(seg, UNRESERVED));
    }
    // The SDK always ends the canonical URI with a slash, whatever the real path.
    out.push_str("/\n");

    if !req.query.is_empty() {
        let mut query: Vec<(String, String)> = req
            .query
            .iter()
            .map(|(k, v)| {
                (
                    utf8_percent_encode(k, UNRESERVED).to_string(),
                    utf8_percent_encode(v, UNRESERVED).to_string(),
                )
            })
            .collect();
        query.sort();
        for (i, (k, v)) in query.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    out.push('\n');

    let signed = signed(req.headers);
    for (name, value) in &signed {
        push_lowercase(&mut out, name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    push_names(&mut out, &signed);
    out.push('\n');
    if req.body.is_empty() {
        out.push_str(EMPTY_BODY_SHA256);
    } else {
        push_hex(&mut out, digest(&SHA256, req.body).as_ref());
    }
    out
}

/// `SDK-HMAC-SHA256 \n X-Sdk-Date \n hex(sha256(canonical request))`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    let mut out = String::with_capacity(ALGORITHM.len() + sdk_date.len() + 66);
    out.push_str(ALGORITHM);
    out.push('\n');
    out.push_str(sdk_date);
    out.push('\n');
    push_hex(
        &mut out,
        digest(&SHA256, canonical_request.as_bytes()).as_ref(),
    );
    out
}

/// The HMAC-SHA256 key of a secret key. ring rather than the `sha2` crate: on a CPU without
/// SHA extensions, as this project's machine, `sha2` runs portable code, and hashing and
/// signing one job request took 5.1 µs with it against 2.8 µs with ring's vectorised code (in
/// a throwaway benchmark); SHA-256 was the largest single symbol of a refresh's CPU profile
/// (BENCHMARKS.md, run 6).
fn key(secret_key: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret_key.as_bytes())
}

/// hex(hmac_sha256(SK, string to sign)).
pub fn signature(secret_key: &str, string_to_sign: &str) -> String {
    let mut out = String::with_capacity(64);
    push_hex(
        &mut out,
        hmac::sign(&key(secret_key), string_to_sign.as_bytes()).as_ref(),
    );
    out
}

/// Checks a hex signature in constant time.
pub(crate) fn verify(secret_key: &str, string_to_sign: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(sig) => hmac::verify(&key(secret_key), string_to_sign.as_bytes(), &sig).is_ok(),
        Err(_) => false,
    }
}

/// The Authorization header value; `signed_headers` as [`signed_headers`] gives them.
pub fn authorization(access_key: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The three parts of an Authorization header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The access key.
    pub access: &'a str,
    /// The signed header names, in the order given.
    pub signed_headers: Vec<&'a str>,
    /// The hex signature.
    pub signature: &'a str,
}

/// Parses an `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…` header.
pub(crate) fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let (mut access, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Access" => access = Some(v),
            "SignedHeaders" => signed = Some(v.split(';').collect()),
            "Signature" => sig = Some(v),
            _ => return None,
        }
    }
    Some(Authorization {
        access: access?,
        signed_headers: signed?,
        signature: sig?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sdk_vectors.json");
        let text = std::fs::read_to_string(path).expect("sdk_vectors.json");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["vectors"].as_array().expect("vectors").clone()
    }

    fn as_query(v: &Value) -> Vec<(String, String)> {
        v.as_array()
            .expect("query array")
            .iter()
            .map(|pair| {
                let k = pair[0].as_str().expect("key").to_string();
                let v = match &pair[1] {
                    Value::String(s) => s.clone(),
                    // The SDK writes booleans as lowercase words and numbers as digits.
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect()
    }

    #[test]
    fn reproduces_every_sdk_vector() {
        let vs = vectors();
        assert_eq!(vs.len(), 5);
        for v in vs {
            let name = v["name"].as_str().expect("name");
            let inputs = &v["inputs"];
            let mut headers: Vec<(String, String)> = v["all_headers_sent"]
                .as_object()
                .expect("headers")
                .iter()
                .filter(|(k, _)| *k != "Authorization")
                .map(|(k, v)| (k.clone(), v.as_str().expect("str").to_string()))
                .collect();
            headers.sort();
            // Given in another order and case, and twice: the same request to sign.
            let mut shuffled: Vec<(String, String)> = headers
                .iter()
                .rev()
                .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                .collect();
            shuffled.extend(
                headers
                    .iter()
                    .map(|(k, _)| (k.clone(), "later".to_string())),
            );
            let query = as_query(&inputs["query_params"]);
            let body = inputs["body"].as_str().unwrap_or("");
            let req = Request {
                method: inputs["method"].as_str().expect("method"),
                path: inputs["resource_path"].as_str().expect("path"),
                query: &query,
                headers: &headers,
                body: body.as_bytes(),
            };
            let canonical = canonical_request(&req);
            let again = canonical_request(&Request {
                headers: &shuffled,
                ..req
            });
            assert_eq!(canonical, again, "{name}");
            assert_eq!(
                canonical,
                v["canonical_request"].as_str().expect("cr"),
                "{name}"
            );
            let date = inputs["x_sdk_date"].as_str().expect("date");
            let sts = string_to_sign(date, &canonical);
            assert_eq!(sts, v["string_to_sign"].as_str().expect("sts"), "{name}");
            let sk = inputs["sk"].as_str().expect("sk");
            let sig = signature(sk, &sts);
            assert_eq!(sig, v["signature"].as_str().expect("sig"), "{name}");
            assert!(verify(sk, &sts, &sig));
            assert!(!verify("wrong", &sts, &sig));
            let auth = authorization(
                inputs["ak"].as_str().expect("ak"),
                &signed_headers(&headers),
                &sig,
            );
            assert_eq!(
                auth,
                v["expected_authorization"].as_str().expect("auth"),
                "{name}"
            );
            let parsed = parse_authorization(&auth).expect("parses");
            assert_eq!(parsed.signature, sig);
        }
    }

    #[test]
    fn headers_with_underscores_are_not_signed() {
        let h = vec![
            ("X_Custom".to_string(), "1".to_string()),
            ("Host".to_string(), "h".to_string()),
        ];
        assert_eq!(signed_headers(&h), "host");
    }

    #[test]
    fn malformed_authorization_is_rejected() {
        for bad in [
            "",
            "Bearer x",
            "SDK-HMAC-SHA256 Access=a",
            "SDK-HMAC-SHA256 Access=a, SignedHeaders=h, Signature=s, Extra=1",
        ] {
            assert!(parse_authorization(bad).is_none(), "{bad}");
        }
        assert!(!verify("k", "s", "not-hex"));
    }
}
