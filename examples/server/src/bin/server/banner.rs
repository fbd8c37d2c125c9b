//! The start-up message: where the server listens, the URLs for the Twilio console, and (in
//! demo mode) a command that sends it a signed test SMS. Never a secret.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use tower_twilio_example_server::{PublicUrlConfig, Startup};

pub(crate) fn print_startup(startup: &Startup, local: SocketAddr) {
    println!("tower-twilio example server listening on http://{local}");
    println!("database: {}", startup.database);
    let base = match (&startup.public_base, &startup.public_url) {
        (Some(base), PublicUrlConfig::Local) => {
            println!(
                "public URL: {base} (PUBLIC_URL is not set: fine for local testing; behind a tunnel \
                 or proxy, set PUBLIC_URL to the https URL Twilio calls)"
            );
            base.clone()
        }
        (Some(base), _) => {
            println!("public URL: {base} (PUBLIC_URL)");
            base.clone()
        }
        (None, PublicUrlConfig::TrustForwarded { proxies, fields }) => {
            let fields: Vec<&str> = fields.iter().map(|field| field.as_str()).collect();
            println!(
                "public URL: rebuilt from {} sent by {} (other forwarded fields are ignored)",
                fields.join(", "),
                proxies.join(", ")
            );
            "https://<your public host>".to_owned()
        }
        (None, _) => "https://<your public host>".to_owned(),
    };
    // The admin token itself is never printed: it is in a file only the owner can read, or in
    // the environment.
    let token = match &startup.admin_token_file {
        Some(file) => format!("$(cat {})", shell_path(file)),
        None => "$ADMIN_TOKEN".to_owned(),
    };
    match &startup.admin_token_file {
        Some(file) => println!(
            "admin token: in {} (mode 0600, new at each start; set ADMIN_TOKEN to choose one)",
            file.display()
        ),
        None => println!("admin token: ADMIN_TOKEN"),
    }
    println!(
        "inspector (the live webhook log, with test buttons), opened with the admin token:\n  \
         xdg-open \"http://{}/#token={token}\"",
        connect_addr(local)
    );
    if let Some(tenant) = &startup.env_tenant {
        println!("tenant {tenant:?}: TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (as primary token)");
    }
    println!("tenants: {}", startup.tenants);
    println!("replay guard: {}", startup.replay_guard);
    println!();
    println!("In the Twilio console (Phone Numbers > Manage > Active numbers > your number):");
    println!("  A message comes in:   POST {base}/twilio/sms");
    println!("  A call comes in:      POST {base}/twilio/voice");
    println!(
        "  Status callback URL:  {base}/twilio/status   (StatusCallback when sending a message)"
    );
    if let Some(demo) = &startup.demo {
        let token_file = shell_path(&demo.token_file);
        println!();
        if demo.created {
            println!(
                "Demo mode: no TWILIO_AUTH_TOKEN and no tenants, so a demo tenant was created."
            );
        } else {
            println!("Demo tenant (from an earlier start):");
        }
        println!(
            "  AccountSid {}; its auth token is in {} (mode 0600; never printed)",
            demo.account_sid,
            demo.token_file.display()
        );
        println!();
        println!("Send a correctly signed test SMS to this server:");
        println!(
            "  cargo run -p tower-twilio-example-server --bin send_webhook -- --token-file {token_file} --account-sid {} --url {base}/twilio/sms sms",
            demo.account_sid
        );
        println!(
            "The same with a wrong token is refused (403) and logged as rejected (the tool exits \
             with 1 on any status but the one --expect names; 2xx by default):"
        );
        println!(
            "  cargo run -p tower-twilio-example-server --bin send_webhook -- --token not-the-token --expect 403 --account-sid {} --url {base}/twilio/sms sms",
            demo.account_sid
        );
    }
    println!();
    println!(
        "Then look at the webhook log:\n  curl -s -H \"Authorization: Bearer {token}\" http://{}/api/webhooks",
        connect_addr(local)
    );
    println!("Stop with Ctrl-C (in-flight requests finish and the log is written first).");
}

/// Where a local client connects (the loopback address for a wildcard bind).
pub(crate) fn connect_addr(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// A path as a shell word.
fn shell_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
