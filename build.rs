//! Tells the tests which services this machine offers, so that a test needing one that is
//! missing shows as ignored, with the reason, instead of passing without running. Under `CI`
//! nothing is ignored: a missing service fails its tests. Nothing here affects the library.
//! (Not in the published package: `include` in `Cargo.toml` leaves it out.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_redis)");
    println!("cargo::rustc-check-cfg=cfg(skip_postgres)");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=TWILIO_TEST_REDIS_URL");
    println!("cargo::rerun-if-env-changed=TWILIO_TEST_POSTGRES_URL");
    let ci = std::env::var_os("CI").is_some();
    if !ci && std::env::var_os("TWILIO_TEST_REDIS_URL").is_none() {
        // `#[cfg_attr(skip_redis, ignore = "needs Redis: …")]` on the Redis store's tests.
        println!("cargo::rustc-cfg=skip_redis");
    }
    if !ci && std::env::var_os("TWILIO_TEST_POSTGRES_URL").is_none() {
        // `#[cfg_attr(skip_postgres, ignore = "needs PostgreSQL: …")]` on the PostgreSQL
        // store's tests.
        println!("cargo::rustc-cfg=skip_postgres");
    }
}
