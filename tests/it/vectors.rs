//! Runs every test vector through the pure verifier.
//!
//! The vectors were produced by the official twilio-python and twilio-node libraries
//! (`tests/data/vectors/README.md`). The expected verdict is "valid if either library says
//! valid": `valid`, or any value in `cross_check`. Files of the same format in the directory
//! named by `TWILIO_VECTORS_DIR` are checked too.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use tower_twilio::{Secret, verify::WebhookRequest};

/// The official libraries' vectors that the binding rules (`docs/SECURITY.md`, "What
/// verified means") deliberately reject although an official library accepts them. Each is
/// counted once per id, however many files carry it, in the summary's "K stricter by binding
/// rules"; a listed vector that is *not* rejected is a mismatch.
const STRICTER_BY_BINDING_RULES: [(&str, &str); 2] = [
    // Received `/a/../sms`, signed `/sms`: node 6.3.1 accepts its WHATWG form, which resolves
    // the dot segments. A router does not resolve them, so the signature would vouch for a
    // route it was not made for (path binding).
    (
        "url-path-dot-segments-in-url",
        "lenient URL form resolves dot segments",
    ),
    // A form POST whose URL carries `bodySHA256`: both libraries verify the form parameters
    // and ignore the hash. Here the hash is always checked, so that a captured JSON webhook
    // cannot be replayed as a form with a body of the attacker's choosing (body binding).
    (
        "query-bodysha256-on-form-post",
        "bodySHA256 in the URL binds the body whatever the content type",
    ),
];

/// A vector file's entry. Fields this test does not read (`description`, `tags`,
/// `binding_rule`, `sdk_accepts`, …) are ignored.
#[derive(Deserialize)]
struct Vector {
    id: String,
    auth_token: String,
    method: String,
    url: String,
    body: String,
    headers: BTreeMap<String, String>,
    valid: bool,
    #[serde(default)]
    cross_check: BTreeMap<String, bool>,
}

impl Vector {
    fn expected(&self) -> bool {
        self.valid || self.cross_check.values().any(|&v| v)
    }

    fn verdict(&self) -> Result<bool, String> {
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|e| e.to_string())?;
            headers.append(name, value);
        }
        let secrets: Vec<Secret> = Secret::new(self.auth_token.as_bytes())
            .into_iter()
            .collect();
        let request =
            WebhookRequest::from_parts(&method, &self.url, &headers, self.body.as_bytes());
        Ok(request.verify(&secrets).is_ok())
    }
}

/// Reads a vector file, or `None` when the file is JSON of another shape.
fn load(path: &Path) -> Option<Vec<Vector>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).ok()
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_vector_gets_the_official_libraries_verdict() {
    let mut files = json_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors"));
    if let Some(extra) = std::env::var_os("TWILIO_VECTORS_DIR") {
        files.extend(json_files(Path::new(&extra)));
    }

    let mut checked = 0;
    let mut mismatches = Vec::new();
    let mut stricter = std::collections::BTreeSet::new();
    for path in &files {
        let Some(vectors) = load(path) else {
            println!("vectors: skipping {}: not a vector file", path.display());
            continue;
        };
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        for vector in vectors {
            checked += 1;
            let stricter_rule = STRICTER_BY_BINDING_RULES
                .iter()
                .find(|(id, _)| *id == vector.id);
            let expected = vector.expected() && stricter_rule.is_none();
            match vector.verdict() {
                Ok(actual) if actual == expected => {
                    if stricter_rule.is_some() && vector.expected() {
                        stricter.insert(vector.id.clone());
                    }
                }
                Ok(actual) => mismatches.push(format!(
                    "{file} {}: expected {}, got {}",
                    vector.id,
                    verdict_name(expected),
                    verdict_name(actual)
                )),
                Err(e) => {
                    mismatches.push(format!("{file} {}: cannot build request: {e}", vector.id));
                }
            }
        }
    }
    println!(
        "vectors: {checked} checked, {} mismatches, {} stricter by binding rules",
        mismatches.len(),
        stricter.len()
    );
    assert!(checked > 0, "no vectors found");
    assert_eq!(
        stricter.len(),
        STRICTER_BY_BINDING_RULES.len(),
        "a deliberately rejected vector is missing: {stricter:?}"
    );
    assert!(
        mismatches.is_empty(),
        "mismatching vectors:\n{}",
        mismatches.join("\n")
    );
}

fn verdict_name(valid: bool) -> &'static str {
    if valid { "valid" } else { "invalid" }
}

/// The vectors whose URL can be an HTTP request target, through the whole middleware: the
/// public base URL is the vector's scheme and authority, the request target its path and query.
#[tokio::test]
async fn vectors_give_the_same_verdict_through_the_middleware() {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};
    use tower_twilio::{Credentials, PublicUrl, TwilioSignatureLayer, VerifiedBody};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors");
    let mut checked = 0;
    let mut refused_by_hygiene = 0;
    let mut mismatches = Vec::new();
    for path in json_files(&dir) {
        let Some(vectors) = load(&path) else { continue };
        for vector in vectors {
            let Some((base, target)) = split_target(&vector.url) else {
                continue;
            };
            let Ok(public) = PublicUrl::fixed(base) else {
                continue;
            };
            let Ok(secret) = Secret::new(vector.auth_token.as_bytes()) else {
                continue;
            };
            let settings = vector
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("x-twilio-webhooks-signature-settings"))
                .map(|(_, v)| v.clone());
            let key_id = settings.as_deref().and_then(|s| {
                tower_twilio::signature::SignatureSettings::parse(s.as_bytes())
                    .ok()?
                    .key_id()
                    .map(str::to_owned)
            });
            let hygiene = refused_by_input_hygiene(&vector, key_id.as_deref());
            // The receiver's credentials belong to the account the vector's request names (a
            // SharedKey must belong to one; any well-formed SID stands in when none is named).
            let owner = named_account_sids(&vector)
                .into_iter()
                .next()
                .filter(|sid| is_well_formed_sid(sid))
                .unwrap_or_else(|| "AC00000000000000000000000000000000".to_owned());
            let credentials = match key_id {
                Some(key_id) => Credentials::new().account(owner).shared_key(key_id, secret),
                None => Credentials::new()
                    .account(owner)
                    .auth_token("primary", secret),
            };
            let mut builder = http::Request::builder()
                .method(vector.method.as_str())
                .uri(target);
            for (name, value) in &vector.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let Ok(request) = builder.body(Full::new(Bytes::from(vector.body.clone()))) else {
                continue;
            };
            let layer = TwilioSignatureLayer::new(credentials)
                .public_url(public)
                .on_security_event(());
            let response = ServiceBuilder::new()
                .layer(layer)
                .service_fn(|_: http::Request<VerifiedBody>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
                })
                .oneshot(request)
                .await
                .unwrap();
            checked += 1;
            let actual = response.status() == http::StatusCode::OK;
            let stricter = STRICTER_BY_BINDING_RULES
                .iter()
                .any(|(id, _)| *id == vector.id);
            if vector.expected() && !stricter && hygiene {
                refused_by_hygiene += 1;
            }
            let expected = vector.expected() && !stricter && !hygiene;
            if actual != expected {
                mismatches.push(format!(
                    "{}: expected {}, got {}",
                    vector.id,
                    verdict_name(expected),
                    response.status()
                ));
            }
        }
    }
    println!(
        "vectors through the middleware: {checked} checked, {} mismatches, \
         {refused_by_hygiene} refused by input hygiene",
        mismatches.len()
    );
    assert!(
        checked > 600,
        "only {checked} vectors had a usable request target"
    );
    assert!(
        mismatches.is_empty(),
        "mismatching vectors:\n{}",
        mismatches.join("\n")
    );
}

/// Splits `scheme://authority` from the path and query, when the URL is a valid request
/// target that reassembles to the same string.
fn split_target(url: &str) -> Option<(&str, &str)> {
    let after_scheme = url.find("://")? + 3;
    let path_start = after_scheme + url[after_scheme..].find('/')?;
    let (base, target) = url.split_at(path_start);
    let uri: http::Uri = target.parse().ok()?;
    (uri.path_and_query()?.as_str() == target && !target.contains('#')).then_some((base, target))
}

/// Every `AccountSid` the vector's request names: in a form body, in the query, or at the top
/// level of a JSON body. Read here with `form_urlencoded` and `serde_json`, not with the
/// crate's own parsers.
fn named_account_sids(vector: &Vector) -> Vec<String> {
    let mut sids = Vec::new();
    let is_form = vector.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type")
            && value.starts_with("application/x-www-form-urlencoded")
    });
    let is_json = vector.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type") && value.starts_with("application/json")
    });
    let wanted = |(name, value): (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)| {
        (name == "AccountSid").then(|| value.into_owned())
    };
    if is_form && !vector.url.contains("bodySHA256=") {
        sids.extend(form_urlencoded::parse(vector.body.as_bytes()).filter_map(wanted));
    }
    if let Some((_, query)) = vector.url.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        sids.extend(form_urlencoded::parse(query.as_bytes()).filter_map(wanted));
    }
    if is_json
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&vector.body)
        && let Some(sid) = map.get("AccountSid")
    {
        sids.push(sid.as_str().unwrap_or("not a string").to_owned());
    }
    sids
}

fn is_well_formed_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("AC") && sid[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether the middleware refuses this vector before verifying it, by the input-hygiene rules
/// (docs/SECURITY.md): a malformed `AccountSid`, two different ones, or a SharedKey id
/// outside `A-Z a-z 0-9 _ - . :` (1 to 128 bytes). The pure verifier does not apply these.
fn refused_by_input_hygiene(vector: &Vector, key_id: Option<&str>) -> bool {
    let sids = named_account_sids(vector);
    let malformed = sids.iter().any(|sid| !is_well_formed_sid(sid));
    let conflicting = sids.windows(2).any(|pair| pair[0] != pair[1]);
    let bad_key = key_id.is_some_and(|id| {
        id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    });
    malformed || conflicting || bad_key
}

/// The figures the documentation states are the ones the vector test finds: the summary line
/// it prints, the number of vectors the official libraries produced, and how many of those the
/// binding rules refuse. Any `N vectors` (or `N official-library vectors`) in these files is
/// the official count or the total.
#[test]
fn the_documented_vector_figures_are_the_real_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut official = 0;
    let mut total = 0;
    for path in json_files(&root.join("tests/data/vectors")) {
        let Some(vectors) = load(&path) else { continue };
        total += vectors.len();
        // The project's own vectors are in one file; the others are the official libraries'.
        if !path.ends_with("vectors_binding.json") {
            official += vectors.len();
        }
    }
    let own = total - official;
    let stricter = STRICTER_BY_BINDING_RULES.len();
    let summary =
        format!("vectors: {total} checked, 0 mismatches, {stricter} stricter by binding rules");

    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap();
    // Compared with the lines joined, however the text is wrapped.
    let readme = read("README.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for stated in [
        summary.clone(),
        format!(
            "on the {official} vectors those libraries produced, except {stricter} that it refuses on purpose"
        ),
        format!("(the {official} of the official libraries and {own} of the project's own)"),
    ] {
        assert!(
            readme.contains(&stated),
            "README.md does not say {stated:?}"
        );
    }
    for file in [
        "README.md",
        "src/lib.rs",
        "docs/SECURITY.md",
        "docs/TWILIO_WEBHOOK_SETUP.md",
    ] {
        let text = read(file);
        // Summary lines, as quoted: up to the closing backtick.
        for quoted in text.split("`vectors: ").skip(1) {
            let line = format!("vectors: {}", quoted.split('`').next().unwrap());
            assert_eq!(line, summary, "{file}");
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if !word.starts_with("vectors") || i == 0 {
                continue;
            }
            let before = match words[i - 1] {
                "official-library" if i >= 2 => words[i - 2],
                before => before,
            };
            if let Ok(n) = before.trim_start_matches('(').parse::<usize>() {
                assert!(
                    n == official || n == total,
                    "{file} states {n} vectors: there are {official} official ones, {total} in all"
                );
            }
        }
    }
}
