//! The admin view driven in a real headless browser: Debian's Chromium through its
//! chromedriver, from a WebDriver client (fantoccini). Sluice keeps 25 `checkout` traces in its
//! memory store; the test searches with the form, pages, opens a trace and checks its spans in
//! the waterfall (order and nesting), opens a span's details, downloads the trace's JSON and
//! reads it back, opens an error group, and reads the performance table. Screenshots of each
//! page go to `target/screenshots/` (the README's are copies).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::postgres::now_nanos;
use crate::query::checkout_traces;
use crate::support::{Ports, Sink, Sluice, free_port, hex};

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new(
            std::env::var("SLUICE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
        )
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs: scripts/test.sh installs Debian's chromium-driver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]}),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a headless Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits (up to 10 s) until the page shown has `url_part` in its URL and an element `css`: a
/// click or a submit returns before the page it leads to has loaded.
async fn wait_for_page(browser: &Client, url_part: &str, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = browser.current_url().await.unwrap();
        if url.as_str().contains(url_part) && browser.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no page at {url_part} with {css}: {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `data-*` attribute `name` of every element `css` selects.
async fn attrs(browser: &Client, css: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in browser.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.attr(name).await.unwrap().unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_view_searches_shows_a_trace_as_a_waterfall_and_groups_errors_in_chromium() {
    let sink = Sink::start().await;
    let ports = Ports::new();
    let view = free_port();
    let config = format!(
        "{common}  jaeger_query:\n    storage: {{traces: memory}}\n    http: {{endpoint: 127.0.0.1:{view}}}\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  memory: {{}}\n  otlp:\n    endpoint: http://127.0.0.1:{sink}\n    tls: {{insecure: true}}\nservice:\n  extensions: [health_check, jaeger_query]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [memory, otlp]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n",
        common = ports.common(),
        sink = sink.grpc_port,
        metrics = ports.metrics,
    );
    let grpc = ports.grpc;
    let sluice = Sluice::start(ports, &config);
    let base = (now_nanos() - 600_000_000_000) / 1000 * 1000;
    let (request, ids) = checkout_traces(base);
    crate::postgres::send_traces(grpc, request.clone()).await;
    sink.wait_for(Duration::from_secs(20), "the spans", |r| {
        r.span_count() >= 50
    })
    .await;
    let site = format!("http://127.0.0.1:{view}");
    let driver = Driver::start();
    let browser = driver.browser().await;

    // Search with the form: the failed checkouts of the last hour, newest first.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&format!("{site}/")).await.unwrap();
        if browser.find(Locator::Css("#traces")).await.is_ok() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(browser.title().await.unwrap(), "Traces · sluice");
    let form = browser.form(Locator::Css("form.filters")).await.unwrap();
    browser
        .find(Locator::Css("select[name=service]"))
        .await
        .unwrap()
        .select_by_value("checkout")
        .await
        .unwrap();
    browser
        .find(Locator::Css("select[name=status]"))
        .await
        .unwrap()
        .select_by_value("error")
        .await
        .unwrap();
    form.submit().await.unwrap();
    // The submit returns before the next page has loaded: wait for it.
    wait_for_page(&browser, "status=error", "#traces tbody tr").await;
    let failed: Vec<String> = (0..25)
        .rev()
        .filter(|i| i % 5 == 0)
        .map(|i| ids[i].clone())
        .collect();
    assert_eq!(
        attrs(&browser, "#traces tbody tr", "data-trace-id").await,
        failed
    );
    screenshot(&browser, "traces").await;

    // Pages of 10 through every checkout: each trace once.
    browser
        .goto(&format!("{site}/?service=checkout&limit=10&lookback=1h"))
        .await
        .unwrap();
    let mut seen = attrs(&browser, "#traces tbody tr", "data-trace-id").await;
    while let Ok(older) = browser.find(Locator::Id("older")).await {
        let href = older.attr("href").await.unwrap().unwrap();
        // Follow it as a person would, then wait until the next page is the one shown.
        older.click().await.unwrap();
        wait_for_page(&browser, &href, "#traces").await;
        seen.extend(attrs(&browser, "#traces tbody tr", "data-trace-id").await);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // Open the newest failed trace from the list.
    browser
        .goto(&format!("{site}/?service=checkout&status=error"))
        .await
        .unwrap();
    browser
        .find(Locator::Css("#traces tbody tr a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_page(&browser, &ids[20], "#waterfall").await;
    // The waterfall: the root, then its child one level in, with the child's parent named.
    let spans = attrs(&browser, "#waterfall tr.span", "data-span-id").await;
    let depths = attrs(&browser, "#waterfall tr.span", "data-depth").await;
    let parents = attrs(&browser, "#waterfall tr.span", "data-parent-id").await;
    assert_eq!(spans.len(), 2);
    assert_eq!(depths, ["0", "1"]);
    assert_eq!(parents[1], spans[0]);
    let root = &request.resource_spans[0].scope_spans[0].spans[40];
    assert_eq!(spans[0], hex(&root.span_id));
    // Its details open from the summary and show attributes and the exception.
    let summary = browser
        .find(Locator::Css("#waterfall tr.span details summary"))
        .await
        .unwrap();
    summary.click().await.unwrap();
    let details = browser
        .find(Locator::Css("#waterfall tr.span details"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(details.contains("user.id"), "{details}");
    assert!(details.contains("u2"), "{details}");
    assert!(details.contains("PaymentError"), "{details}");
    screenshot(&browser, "trace").await;

    // The download link gives the trace as OTLP JSON, which reads back to what was sent.
    let href = browser
        .find(Locator::Id("download"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let json = reqwest::get(format!("{site}{href}"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let bytes = sluice_core::json::json_to_protobuf(sluice_core::Signal::Traces, &json).unwrap();
    let downloaded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let mut got: Vec<_> = downloaded.resource_spans[0].scope_spans[0].spans.clone();
    got.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    let mut want: Vec<_> = request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .filter(|s| hex(&s.trace_id) == ids[20])
        .cloned()
        .collect();
    want.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    assert_eq!(got, want);

    // Errors: two groups, the most frequent first; one opens to its stack trace and trace.
    browser.goto(&format!("{site}/errors")).await.unwrap();
    assert_eq!(
        attrs(&browser, "details.group", "data-type").await,
        ["PaymentError", "TimeoutError"]
    );
    let group = browser.find(Locator::Css("details.group")).await.unwrap();
    group
        .find(Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = group.text().await.unwrap();
    assert!(text.contains("PaymentError at pay()"), "{text}");
    assert!(text.contains(&ids[20]), "{text}");
    screenshot(&browser, "errors").await;

    // Performance: one row per operation.
    browser
        .goto(&format!("{site}/operations?lookback=1h"))
        .await
        .unwrap();
    let table = browser
        .find(Locator::Id("operations"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        table.contains("POST /pay") && table.contains("db"),
        "{table}"
    );
    assert!(table.contains("20.0%"), "the error rate: {table}");
    // Each row's throughput line, labelled with its numbers: 25 spans of each operation in
    // the last hour, cut into 2-minute steps.
    let lines = browser
        .find_all(Locator::Css("#operations svg.spark"))
        .await
        .unwrap();
    assert_eq!(lines.len(), 2, "a throughput line per operation");
    for line in lines {
        let label = line.attr("aria-label").await.unwrap().unwrap_or_default();
        assert!(
            label.starts_with("Spans per 2 min over the window: from 0 to "),
            "{label}"
        );
    }
    screenshot(&browser, "operations").await;

    // A trace that does not exist is a page that says so, with a 404.
    let status = reqwest::get(format!("{site}/trace/0123456789abcdef0123456789abcdef"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    browser.close().await.unwrap();
    drop(sluice);
}
