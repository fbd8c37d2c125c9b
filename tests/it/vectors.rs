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
    for path in &files {
        let Some(vectors) = load(path) else {
            println!("vectors: skipping {}: not a vector file", path.display());
            continue;
        };
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        for vector in vectors {
            checked += 1;
            let expected = vector.expected();
            match vector.verdict() {
                Ok(actual) if actual == expected => {}
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
        "vectors: {checked} checked, {} mismatches",
        mismatches.len()
    );
    assert!(checked > 0, "no vectors found");
    assert!(
        mismatches.is_empty(),
        "mismatching vectors:\n{}",
        mismatches.join("\n")
    );
}

fn verdict_name(valid: bool) -> &'static str {
    if valid { "valid" } else { "invalid" }
}
