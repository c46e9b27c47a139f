//! What authentication costs a request (it is paid per request, not per item): a bearer token,
//! basic credentials against each htpasswd kind, bcrypt's first check and a remembered one, and
//! what `include_metadata` costs to keep a request's headers. `cargo bench -p sluice-auth`.

use std::hint::black_box;

use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use sluice_auth::{BasicAuthFactory, BearerTokenAuthFactory};
use sluice_core::ExtensionFactory;
use sluice_core::client::{AuthInfo, ClientInfo};

fn basic(user: &str) -> Vec<u8> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:secret"));
    format!("Basic {token}").into_bytes()
}

fn authentication(c: &mut Criterion) {
    let bearer = BearerTokenAuthFactory
        .build(
            "bearertokenauth",
            &json!({"tokens": ["one-token", "another-token"]}),
        )
        .unwrap()
        .server_authenticator()
        .unwrap();
    c.bench_function("bearer, two tokens", |b| {
        b.iter(|| bearer.authenticate(black_box(Some(b"Bearer another-token"))))
    });
    // Every password is `secret`; bcrypt at htpasswd -B's default cost (5) and at 10.
    let htpasswd = "plain:secret\nsha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\napr:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\nb5:$2b$05$4cUZVUsApf.tIO3xx9EnBuh5SH4wAwfAT8gLmkWwCvrRGUczM3JtW\nb10:$2b$10$9of/mLilX1IFD0APAam/Z.cQrmsER/DubVOaXRlx3YzpTCJkQwP6a";
    let server = BasicAuthFactory
        .build("basicauth", &json!({"htpasswd": {"inline": htpasswd}}))
        .unwrap()
        .server_authenticator()
        .unwrap();
    for user in ["plain", "sha"] {
        let value = basic(user);
        c.bench_function(&format!("basic, {user}"), |b| {
            b.iter(|| server.authenticate(black_box(Some(&value))).unwrap())
        });
    }
    let mut slow = c.benchmark_group("basic, slow hashes");
    slow.sample_size(10);
    for user in ["apr", "b5", "b10"] {
        // A wrong password is never remembered: every attempt pays bcrypt.
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:wrong"))
        )
        .into_bytes();
        slow.bench_function(format!("{user}, not remembered"), |b| {
            b.iter(|| server.authenticate(black_box(Some(&wrong))).unwrap_err())
        });
        let right = basic(user);
        server.authenticate(Some(&right)).unwrap();
        slow.bench_function(format!("{user}, remembered"), |b| {
            b.iter(|| server.authenticate(black_box(Some(&right))).unwrap())
        });
    }
    slow.finish();
    // include_metadata: the headers a typical OTLP/HTTP client sends.
    let headers: Vec<(&str, &[u8])> = vec![
        ("host", b"gateway:4318"),
        ("user-agent", b"OTel-OTLP-Exporter-Python/1.27.0"),
        ("content-type", b"application/x-protobuf"),
        ("content-length", b"18234"),
        ("content-encoding", b"gzip"),
        ("accept-encoding", b"gzip, deflate"),
        ("accept", b"*/*"),
        ("connection", b"keep-alive"),
        ("x-tenant-id", b"acme"),
    ];
    let auth = AuthInfo::none().with("username", "ann");
    c.bench_function("include_metadata, 9 headers", |b| {
        b.iter(|| ClientInfo::new(black_box(headers.iter().copied()), &auth))
    });
}

criterion_group!(benches, authentication);
criterion_main!(benches);
