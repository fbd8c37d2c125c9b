//! Rebuilds the crate when its migrations change, and tells the tests which services this
//! machine offers, so that a test needing one that is missing shows as ignored, with the
//! reason, instead of passing without running. Under `CI` nothing is ignored: a missing
//! service fails its tests (`.ci/run` provides them all).

use std::path::{Path, PathBuf};

/// Where the browser test looks for ChromeDriver and Chromium (`tests/it/inspector.rs`):
/// the variable, else the Debian path.
const BROWSER: [(&str, &str); 2] = [
    ("CHROMEDRIVER", "/usr/bin/chromedriver"),
    ("CHROME_BIN", "/usr/bin/chromium"),
];

fn main() {
    // `sqlx::migrate!` embeds the migrations: the crate is built again when they change.
    println!("cargo::rerun-if-changed=migrations");
    for cfg in ["skip_postgres", "skip_redis", "skip_browser"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    for var in ["CI", "TWILIO_TEST_POSTGRES_URL", "TWILIO_TEST_REDIS_URL"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let ci = std::env::var_os("CI").is_some();
    let missing = |var: &str| !ci && std::env::var_os(var).is_none();
    if missing("TWILIO_TEST_POSTGRES_URL") {
        println!("cargo::rustc-cfg=skip_postgres");
    }
    if missing("TWILIO_TEST_REDIS_URL") {
        println!("cargo::rustc-cfg=skip_redis");
    }
    let mut browser = true;
    for (var, default) in BROWSER {
        println!("cargo::rerun-if-env-changed={var}");
        let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        let found = Path::new(&path).exists();
        // Look again when the binary changes or, while it is missing, when its directory does
        // (installing it).
        let watch = if found {
            Some(path.as_path())
        } else {
            path.parent()
        };
        if let Some(watch) = watch.filter(|watch| watch.exists()) {
            println!("cargo::rerun-if-changed={}", watch.display());
        }
        browser &= found;
    }
    if !ci && !browser {
        println!("cargo::rustc-cfg=skip_browser");
    }
}
