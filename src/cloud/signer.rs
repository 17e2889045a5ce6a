//! SDK-HMAC-SHA256 request signing, as the official Huawei Cloud SDK does it (SPEC §3).
//!
//! The same functions sign the exporter's requests and verify them in the simulator, so the
//! two can only agree by agreeing with the SDK's vectors (`tests` below check all five).

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The algorithm name that opens the string to sign and the Authorization header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// `X-Sdk-Date` format (UTC).
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// RFC 3986 unreserved characters stay as they are; everything else is encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a signature covers.
pub struct Request<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The resource path, not percent-encoded (`/v1/{project}/jobs/{id}`).
    pub path: &'a str,
    /// Query parameters, not encoded, in any order.
    pub query: &'a [(String, String)],
    /// The headers to sign, as (name, value); names in any case.
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

/// The signed-header names of `headers`: lowercased, sorted, without names containing `_`.
pub fn signed_headers(headers: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| !n.contains('_'))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The canonical request of SPEC §3.
pub fn canonical_request(req: &Request<'_>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    for seg in req.path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(utf8_percent_encode(seg, UNRESERVED));
    }
    // The SDK always ends the canonical URI with a slash, whatever the real path.
    out.push_str("/\n");

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
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&query.join("&"));
    out.push('\n');

    let names = signed_headers(req.headers);
    for name in &names {
        let value = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .unwrap_or_default();
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(req.body)));
    out
}

/// `SDK-HMAC-SHA256 \n X-Sdk-Date \n hex(sha256(canonical request))`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn mac(secret_key: &str, string_to_sign: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(string_to_sign.as_bytes());
    mac
}

/// hex(hmac_sha256(SK, string to sign)).
pub fn signature(secret_key: &str, string_to_sign: &str) -> String {
    hex::encode(mac(secret_key, string_to_sign).finalize().into_bytes())
}

/// Checks a hex signature in constant time.
pub fn verify(secret_key: &str, string_to_sign: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(sig) => mac(secret_key, string_to_sign).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

/// The Authorization header value.
pub fn authorization(access_key: &str, signed_headers: &[String], signature: &str) -> String {
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={signature}",
        signed_headers.join(";")
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
pub fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
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
        assert_eq!(signed_headers(&h), vec!["host"]);
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
