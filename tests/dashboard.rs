//! The operator dashboard (`src/host/dashboard.html`, served by the filter itself at
//! `{admin.path_prefix}/`) in a real headless Chromium driven over the DevTools
//! protocol, in front of the real Envoy with the built filter: the page shows a
//! breaker the test trips through Envoy, its buttons reset, isolate and release
//! upstreams in the filter (the token asked for once, kept in session storage, never
//! shown, forgotten on a 401), and with `protect_reads` it asks for the token before it
//! shows anything. A screenshot is saved to `target/artifacts/dashboard.png`.
//!
//! Chromium missing is a failure under `CI=true` (`make dashboard-test` installs it)
//! and a skip message elsewhere; Envoy missing is always a failure.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llm_breaker_harness::client;
use llm_breaker_harness::envoy::{Envoy, Options};
use llm_breaker_harness::upstream::{Behaviour, MockUpstream};
use llm_breaker_harness::{is_ci, wait_for};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How often the page refreshes itself (`REFRESH_MS` in `src/host/dashboard.html`).
const PAGE_REFRESH: Duration = Duration::from_secs(2);
const PREFIX: &str = "/_llm_breaker";
const TOKEN_ENV: &str = "LLM_BREAKER_ADMIN_TOKEN";
const TOKEN: &str = "s3cret-dashboard-token";
const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

/// One route over openai → azure; only three consecutive failures trip, and an
/// open breaker stays open for a minute (so only Reset can close it in the test).
fn config(protect_reads: bool) -> String {
    format!(
        r#"{{"routes":[{{"name":"chat","match":{{"path_prefix":"/v1/"}},"upstreams":["openai","azure"]}}],
            "breaker":{{"consecutive_failures":3,
                "failure_rate":{{"minimum_calls":1000000,"window":{{"seconds":60}}}},
                "open":{{"base_ms":60000,"max_ms":600000,"jitter":0}}}},
            "admin":{{"enabled":true,"path_prefix":"{PREFIX}","protect_reads":{protect_reads},
                "token_env":"{TOKEN_ENV}","history":50}}}}"#
    )
}

fn start(protect_reads: bool, a: &MockUpstream, b: &MockUpstream) -> Envoy {
    let mut opts = Options::breaker_for(&config(protect_reads), &[a, b]);
    opts.env = vec![(TOKEN_ENV.into(), TOKEN.into())];
    Envoy::start(&opts)
}

/// Sends a chat request and waits until the filter has recorded its outcome.
fn chat(e: &Envoy) -> client::Response {
    e.send_recorded(CHAT, &[], BODY.as_bytes())
}

/// `window.prompt` answers from session storage (`__answer`, which survives a
/// reload) and counts its calls (`__prompts`), so the test decides what the
/// operator types and sees how often the page asked.
fn prompt_stub(first_answer: &str) -> String {
    format!(
        r#"(function () {{
  try {{ if (sessionStorage.getItem("__answer") === null) sessionStorage.setItem("__answer", {a}); }} catch (e) {{}}
  window.prompt = function () {{
    try {{
      sessionStorage.setItem("__prompts", String(Number(sessionStorage.getItem("__prompts") || 0) + 1));
      return sessionStorage.getItem("__answer");
    }} catch (e) {{ return null; }}
  }};
}})();"#,
        a = js(first_answer)
    )
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    Value::from(s).to_string()
}

/// The card of one upstream-scoped breaker.
fn card(upstream: &str) -> String {
    format!(".card[data-upstream={}]:not([data-model])", js(upstream))
}

fn card_state(upstream: &str) -> String {
    format!(
        "(document.querySelector({}) || {{}}).dataset?.state || null",
        js(&card(upstream))
    )
}

fn field(upstream: &str, name: &str) -> String {
    format!(
        "(document.querySelector({}) || {{textContent: null}}).textContent",
        js(&format!("{} [data-field={}]", card(upstream), js(name)))
    )
}

fn button(upstream: &str, action: &str) -> String {
    format!("{} button[data-action={}]", card(upstream), js(action))
}

const PROMPTS: &str = r#"Number(sessionStorage.getItem("__prompts") || 0)"#;
const STORED_TOKEN: &str = r#"sessionStorage.getItem("llm-breaker-admin-token")"#;
const MSG: &str = r#"(document.getElementById("msg") || {textContent: ""}).textContent"#;

#[test]
fn the_page_shows_a_tripped_breaker_and_its_buttons_act_on_the_filter() {
    let Some(bin) = chromium() else { return };
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(false, &a, &b);
    let page = client::get(e.listener, &format!("{PREFIX}/")).unwrap();
    assert_eq!(page.status, 200, "dashboard: {}", page.text());
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        page.headers
    );

    let mut br = Browser::launch(&bin);
    br.on_new_document(&prompt_stub("wrong-token"));
    br.open(&format!("http://{}{PREFIX}/", e.listener));
    br.wait_eq("openai card closed", &card_state("openai"), json!("closed"));
    br.wait_eq("azure card closed", &card_state("azure"), json!("closed"));
    br.wait_eq(
        "chat route available",
        r#"document.querySelector('.route[data-route="chat"]')?.dataset.available"#,
        json!("true"),
    );

    // Trip openai through Envoy; the page shows it open on its next refresh.
    a.set(Behaviour::Status(503));
    for _ in 0..3 {
        assert_eq!(chat(&e).status, 503);
    }
    assert_eq!(e.upstream_stat("openai", "state"), 1);
    let took = br.wait_eq("openai card open", &card_state("openai"), json!("open"));
    // One refresh period, plus room for a loaded machine's Chromium.
    assert!(
        took < PAGE_REFRESH + Duration::from_secs(3),
        "page took {took:?} to show it"
    );
    let left = br.eval(&field("openai", "left"));
    let secs = left
        .as_str()
        .and_then(|s| s.strip_suffix("s left"))
        .and_then(|s| s.parse::<u64>().ok());
    assert!(
        secs.is_some_and(|s| (50..=60).contains(&s)),
        "countdown {left}"
    );
    assert_eq!(br.eval(&field("openai", "opened")), json!("1"));
    assert!(
        br.eval(&field("openai", "last"))
            .as_str()
            .is_some_and(|s| s.starts_with("status, ")),
        "last failure: {}",
        br.eval(&field("openai", "last"))
    );
    br.wait_eq(
        "transition row",
        r#"!!document.querySelector('#transitions tr[data-upstream="openai"][data-to="open"]')"#,
        json!(true),
    );
    // The countdown runs between refreshes.
    wait_for("the countdown to move", Duration::from_secs(4), || {
        br.eval(&field("openai", "left")) != left
    });

    // A wrong token: the filter says 401, the page forgets it and says so.
    br.click(&button("openai", "reset"));
    br.wait_until("401 message", &format!("{MSG}.includes('401')"));
    assert_eq!(br.eval(PROMPTS), json!(1));
    assert_eq!(br.eval(STORED_TOKEN), Value::Null, "rejected token kept");
    assert_eq!(e.upstream_stat("openai", "state"), 1);

    // The right token: asked for once, then kept for the session.
    br.eval(&format!(
        r#"sessionStorage.setItem("__answer", {})"#,
        js(TOKEN)
    ));
    br.click(&button("azure", "isolate"));
    br.wait_eq("azure isolated", &card_state("azure"), json!("isolated"));
    br.wait_eq(
        "chat route down",
        r#"document.querySelector('.route[data-route="chat"]')?.dataset.available"#,
        json!("false"),
    );
    assert_eq!(
        client::get(e.listener, &format!("{PREFIX}/health"))
            .unwrap()
            .status,
        503
    );
    br.screenshot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/dashboard.png"));

    br.click(&button("azure", "release"));
    br.wait_eq("azure released", &card_state("azure"), json!("closed"));
    a.set(Behaviour::Ok);
    br.click(&button("openai", "reset"));
    br.wait_eq("openai reset", &card_state("openai"), json!("closed"));
    wait_for(
        "state metric 0 (closed) after Reset",
        Duration::from_secs(3),
        || e.upstream_stat("openai", "state") == 0,
    );
    assert_eq!(chat(&e).upstream(), Some("openai"));
    assert_eq!(br.eval(PROMPTS), json!(2), "token asked for more than once");
    assert_eq!(
        client::get(e.listener, &format!("{PREFIX}/health"))
            .unwrap()
            .status,
        200
    );

    let html = br.eval("document.documentElement.outerHTML");
    assert!(
        !html.as_str().unwrap().contains(TOKEN),
        "the page shows the token"
    );
    br.assert_no_errors();
}

#[test]
fn with_protect_reads_the_page_asks_for_the_token_before_it_shows_anything() {
    let Some(bin) = chromium() else { return };
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let e = start(true, &a, &b);
    // A browser sends no bearer token when it navigates: the page itself is public
    // (it holds no data) and asks for the token for the reads.
    let page = client::get(e.listener, &format!("{PREFIX}/")).unwrap();
    assert_eq!(
        page.status,
        200,
        "with protect_reads the dashboard page must still load without a token: {}",
        page.text()
    );
    assert_eq!(
        client::get(e.listener, &format!("{PREFIX}/status"))
            .unwrap()
            .status,
        401
    );
    let mut br = Browser::launch(&bin);
    br.on_new_document(&prompt_stub("wrong-token"));
    br.open(&format!("http://{}{PREFIX}/", e.listener));

    // The wrong token is rejected and forgotten; the page stops asking (no prompt
    // every two seconds) and shows nothing.
    br.wait_until("401 message", &format!("{MSG}.includes('401')"));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(br.eval(PROMPTS), json!(1));
    assert_eq!(br.eval(STORED_TOKEN), Value::Null);
    assert_eq!(
        br.eval("document.querySelectorAll('.card').length"),
        json!(0)
    );

    // After a reload with the right answer the page reads the status with it.
    br.eval(&format!(
        r#"sessionStorage.setItem("__answer", {}); location.reload()"#,
        js(TOKEN)
    ));
    br.wait_eq("openai card", &card_state("openai"), json!("closed"));
    assert_eq!(br.eval(PROMPTS), json!(2));
    // Reads really are protected: the same fetch without the token is refused.
    assert_eq!(
        br.eval("fetch('./status', {cache: 'no-store'}).then(r => r.status)"),
        json!(401)
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        br.eval(PROMPTS),
        json!(2),
        "asked again while the token works"
    );
    let html = br.eval("document.documentElement.outerHTML");
    assert!(
        !html.as_str().unwrap().contains(TOKEN),
        "the page shows the token"
    );
    br.assert_no_errors();
}

/// The Chromium binary: `$CHROMIUM_BIN`, else `chromium` or `chromium-browser` on
/// the PATH. `None` (after saying so) only outside CI.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        let msg = "Chromium not found (CHROMIUM_BIN, or chromium on the PATH) — `make dashboard-test` installs it";
        assert!(!is_ci(), "{msg}");
        eprintln!("skipping: {msg}");
    }
    found
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The Chromium process and its profile directory: killed and removed on drop,
/// also when the test panics.
struct Process {
    child: Child,
    profile: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Uncaught exceptions and console errors the page reported.
    errors: Vec<String>,
    stderr: Arc<Mutex<String>>,
    process: Process,
}

impl Browser {
    /// Starts Chromium, connects to its DevTools websocket and opens a blank page.
    fn launch(bin: &Path) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "llm-breaker-chromium-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().unwrap();
        let process = Process { child, profile };
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "Chromium printed no DevTools URL within 30 s:\n{}",
                    log.lock().unwrap()
                )
            });
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url}"));
        let stream = TcpStream::connect(hostport).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools websocket {url}: {e}"));
        // Short reads from now on, so a wait can give up at its own deadline.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut br = Browser {
            ws,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
            stderr: log,
            process,
        };
        let target = br.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = br.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        br.session = attached["sessionId"].as_str().unwrap().to_string();
        br.call("Page.enable", json!({}));
        br.call("Runtime.enable", json!({}));
        br.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        br
    }

    /// Runs `source` in every document this page loads from now on, before its scripts.
    fn on_new_document(&mut self, source: &str) {
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": source}),
        );
    }

    /// Navigates and waits for the load to complete.
    fn open(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
        self.wait_eq(
            "page loaded",
            "location.href + ' ' + document.readyState",
            json!(format!("{url} complete")),
        );
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its JSON value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {ex}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Polls `expr` every 100 ms until it equals `want` (at most 8 s); returns how long it took.
    fn wait_eq(&mut self, what: &str, expr: &str, want: Value) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.eval(expr);
            if got == want {
                return start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(8) {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!(
                    "waiting for {what}: `{expr}` is {got}, not {want}.\nPage text:\n{}\nPage errors: {:?}",
                    text.as_str().unwrap_or(""),
                    self.errors
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_until(&mut self, what: &str, expr: &str) -> Duration {
        self.wait_eq(what, &format!("!!({expr})"), json!(true))
    }

    /// Clicks the element's centre with the mouse, as a user would (so it must be
    /// visible, enabled and not covered).
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            r#"(() => {{
  const b = document.querySelector({s});
  if (!b) return "missing";
  if (b.disabled) return "disabled";
  b.scrollIntoView({{block: "center"}});
  const r = b.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  if (document.elementFromPoint(x, y) !== b) return "covered";
  return [x, y];
}})()"#,
            s = js(selector)
        ));
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("cannot click {selector}: {at}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Saves a PNG of the viewport.
    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().unwrap_or(""));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    fn assert_no_errors(&mut self) {
        self.eval("0"); // collect the events sent so far
        assert!(self.errors.is_empty(), "page errors: {:?}", self.errors);
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// Sends one command and reads until its answer, recording page errors seen on the way.
    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}\n{}", self.chromium_log()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["id"] == json!(id) {
                        if let Some(err) = v.get("error") {
                            panic!("DevTools {method}: {err}");
                        }
                        return v["result"].clone();
                    }
                    self.event(&v);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("DevTools {method}: {e}\n{}", self.chromium_log()),
            }
            if Instant::now() > deadline {
                panic!("DevTools {method}: no answer in 30 s");
            }
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("exception");
                self.errors.push(text.to_string());
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error {}", p["args"]));
            }
            _ => {}
        }
    }

    fn chromium_log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask nicely first, so Chromium's helper processes exit with it.
        let _ = self.ws.send(Message::text(
            json!({"id": 0, "method": "Browser.close"}).to_string(),
        ));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // `process` is dropped next: killed if still running, profile removed.
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::with_capacity(s.len() * 3 / 4), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ"), b"hello world");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}

/// `within_request`: each card shows its upstream's attempt counters (hidden under
/// `next_request`), read from the `status` endpoint's `failover` part.
#[test]
fn under_within_request_the_cards_show_the_attempt_counters() {
    let Some(bin) = chromium() else { return };
    let (a, b) = (MockUpstream::start("openai"), MockUpstream::start("azure"));
    let filter = config(false).replacen('{', r#"{"failover":"within_request","#, 1);
    let providers = [("openai", a.addr()), ("azure", b.addr())];
    let mut opts = Options::breaker(&filter, &providers);
    opts.within = Some(llm_breaker_harness::envoy::Within::generated(
        &filter,
        &providers,
        Duration::from_secs(1),
    ));
    let e = Envoy::start(&opts);
    a.set(Behaviour::Status(503));
    for _ in 0..4 {
        assert_eq!(chat(&e).status, 200, "azure answers every one");
    }
    e.wait_upstream_stat("azure", "successes", 4);
    let mut br = Browser::launch(&bin);
    br.open(&format!("http://{}{PREFIX}/", e.listener));
    br.wait_eq("openai card open", &card_state("openai"), json!("open"));
    br.wait_eq(
        "openai's attempts",
        &field("openai", "attempts"),
        json!("3 · 3 failed and retried"),
    );
    br.wait_eq(
        "azure's attempts",
        &field("azure", "attempts"),
        json!("4 · 0 failed and retried"),
    );
    br.assert_no_errors();
}
