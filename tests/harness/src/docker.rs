//! Drives the docker-compose harness (`envoy/docker-compose.yaml`) from tests: checks
//! that a Docker engine is reachable (a failure under `CI=true`, a skip otherwise),
//! picks the images, brings up a uniquely named compose project on free loopback
//! ports, injects faults into one service's container with the Docker CLI, and tears
//! the project down (containers, networks, volumes) when dropped, also on a panic.

use crate::client;
use crate::envoy::{self, free_port, workspace_root};
use crate::is_ci;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The official Envoy image of the version the project tests with.
const ENVOY_OFFICIAL_IMAGE: &str = "envoyproxy/envoy:v1.40.0";
/// The local `FROM scratch` Envoy image `make images` builds (`$ENVOY_LOCAL_IMAGE`).
const ENVOY_LOCAL_IMAGE: &str = "llm-breaker/envoy:1.40.0";
/// The mock provider image `make images` builds (`$MOCK_IMAGE`).
const MOCK_IMAGE: &str = "llm-breaker/mock-provider:dev";
/// The plugin OCI image `make oci` builds (`$PLUGIN_IMAGE`).
const PLUGIN_IMAGE: &str = "llm-breaker/plugin:dev";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `docker ARGS`; stdout on success, stdout+stderr on failure.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let o = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("docker {}: {}", args.join(" "), output_text(&o)))
    }
}

/// Whether a Docker engine answers (`docker info`); the reason if not.
fn engine_available() -> Result<(), String> {
    docker(&["info", "--format", "{{.ServerVersion}}"]).map(|_| ())
}

/// Whether a test that needs Docker should run. Without an engine: a panic under
/// `CI=true` (a CI run must not pass by skipping), else a skip message and `false`.
pub fn require_engine(test: &str) -> bool {
    match engine_available() {
        Ok(()) => true,
        Err(e) if is_ci() => panic!(
            "{test}: no Docker engine is reachable, and CI=true: the docker-compose tests \
             cannot run, so they fail instead of passing silently.\n{e}"
        ),
        Err(e) => {
            eprintln!("SKIPPED {test}: no Docker engine is reachable (set CI=true to make this a failure)\n{e}");
            false
        }
    }
}

/// Whether the engine has this image locally.
pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok()
}

/// The Envoy image: `$ENVOY_IMAGE`; else, under CI, the local build; else the official
/// image if the engine has it, else the local build.
pub fn envoy_image() -> String {
    if let Some(i) = std::env::var("ENVOY_IMAGE").ok().filter(|v| !v.is_empty()) {
        return i;
    }
    let local = env_or("ENVOY_LOCAL_IMAGE", ENVOY_LOCAL_IMAGE);
    if !is_ci() && image_exists(ENVOY_OFFICIAL_IMAGE) {
        return ENVOY_OFFICIAL_IMAGE.to_string();
    }
    local
}

/// The plugin OCI image: `$PLUGIN_IMAGE`, else the one `make oci` builds.
pub fn plugin_image() -> String {
    env_or("PLUGIN_IMAGE", PLUGIN_IMAGE)
}

/// The mock provider image: `$MOCK_IMAGE`, else the one `make images` builds.
fn mock_image() -> String {
    env_or("MOCK_IMAGE", MOCK_IMAGE)
}

/// The compose command: `$COMPOSE` (split on spaces), else `docker compose` if the
/// CLI has it, else `docker-compose`.
fn compose_command() -> Vec<String> {
    if let Some(c) = std::env::var("COMPOSE")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return c.split_whitespace().map(str::to_string).collect();
    }
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// A fault injected into one service's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `docker stop`: the process is gone, its address unreachable, its name unresolvable.
    Stop,
    /// `docker pause`: the process is frozen; the kernel still accepts connections.
    Pause,
    /// `docker network disconnect` from the providers network.
    Disconnect,
}

impl Fault {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Stop => "docker stop",
            Fault::Pause => "docker pause",
            Fault::Disconnect => "docker network disconnect",
        }
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running compose project of `envoy/docker-compose.yaml`, torn down when dropped.
pub struct Compose {
    project: String,
    file: PathBuf,
    command: Vec<String>,
    env: Vec<(String, String)>,
    /// Envoy's listener, published on 127.0.0.1.
    pub listener: SocketAddr,
    /// Envoy's admin, published on 127.0.0.1.
    pub admin: SocketAddr,
    /// The Envoy image in use.
    pub envoy_image: String,
    /// With the `fleet` profile ([`Compose::up_fleet`]): envoy-a's and envoy-b's
    /// (listener, admin), published on 127.0.0.1.
    pub fleet: Vec<(SocketAddr, SocketAddr)>,
    /// Compose profiles every command of this project runs with.
    profiles: Vec<&'static str>,
    down: bool,
}

/// The etcd image of the fleet profile: `$ETCD_IMAGE`, else the local build.
fn etcd_image() -> String {
    env_or("ETCD_IMAGE", "llm-breaker/etcd:3.4")
}

impl Compose {
    /// Brings the project up with `wasm` mounted as the filter and waits until Envoy
    /// is ready and every provider answers through it. Panics (after tearing down)
    /// with the containers' logs if that fails. The images must exist.
    pub fn up(wasm: &std::path::Path) -> Compose {
        Self::up_with(wasm, false)
    }

    /// [`Compose::up`] with the `fleet` profile too: etcd and two more Envoys
    /// (envoy-a, envoy-b) sharing their breakers through it; waits until both are
    /// ready as well.
    pub fn up_fleet(wasm: &std::path::Path) -> Compose {
        Self::up_with(wasm, true)
    }

    fn up_with(wasm: &std::path::Path, fleet: bool) -> Compose {
        let envoy_image = envoy_image();
        let mut images = vec![envoy_image.clone(), mock_image()];
        if fleet {
            images.push(etcd_image());
        }
        for image in images {
            assert!(
                image_exists(&image),
                "image {image} not found in the Docker engine — run `make images` \
                 (`make compose-test` builds it), or set ENVOY_IMAGE / MOCK_IMAGE"
            );
        }
        let (port, admin_port) = (free_port(), free_port());
        let project = format!(
            "llmb-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let fleet_ports: Vec<(u16, u16)> = if fleet {
            (0..2).map(|_| (free_port(), free_port())).collect()
        } else {
            Vec::new()
        };
        let mut env: Vec<(String, String)> = vec![
            ("ENVOY_IMAGE".into(), envoy_image.clone()),
            ("MOCK_IMAGE".into(), mock_image()),
            ("LLM_BREAKER_WASM".into(), wasm.display().to_string()),
            ("LLMB_PORT".into(), port.to_string()),
            ("LLMB_ADMIN_PORT".into(), admin_port.to_string()),
        ];
        if fleet {
            env.push(("ETCD_IMAGE".into(), etcd_image()));
            for (i, (l, a)) in ["A", "B"].iter().zip(&fleet_ports) {
                env.push((format!("LLMB_FLEET_PORT_{i}"), l.to_string()));
                env.push((format!("LLMB_FLEET_ADMIN_{i}"), a.to_string()));
            }
        }
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let compose = Compose {
            fleet: fleet_ports
                .iter()
                .map(|&(l, a)| (local(l), local(a)))
                .collect(),
            profiles: if fleet { vec!["fleet"] } else { Vec::new() },
            project,
            file: workspace_root().join("envoy/docker-compose.yaml"),
            command: compose_command(),
            env,
            listener: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            envoy_image,
            down: false,
        };
        // From here on, Drop tears down whatever `up` managed to create.
        if let Err(e) = compose.run(&["up", "-d"]) {
            panic!("{e}\n{}", compose.logs());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let admins: Vec<SocketAddr> = std::iter::once(compose.admin)
            .chain(compose.fleet.iter().map(|&(_, a)| a))
            .collect();
        for admin in admins {
            while !client::get(admin, "/ready").is_ok_and(|r| r.status == 200) {
                assert!(
                    Instant::now() < deadline,
                    "Envoy not ready after 60 s\n{}",
                    compose.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        compose
    }

    /// The compose project name (unique per test run).
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Runs a compose subcommand for this project.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let file = self.file.display().to_string();
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args(["-p", &self.project, "-f", &file]);
        for p in &self.profiles {
            cmd.args(["--profile", p]);
        }
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let o = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.command.join(" ")))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "{} {}: {}",
                self.command.join(" "),
                args.join(" "),
                output_text(&o)
            ))
        }
    }

    /// The container id of a service, running or not (by compose's labels, which v1
    /// and v2 both set; v2's `ps` lists only running containers).
    fn container(&self, service: &str) -> String {
        let out = docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "containers of service {service}: {ids:?}");
        ids[0].to_string()
    }

    /// The Docker name of one of the compose file's networks.
    fn network(&self, name: &str) -> String {
        let out = docker(&[
            "network",
            "ls",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.network={name}"),
            "--format",
            "{{.Name}}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let net = out.trim().to_string();
        assert!(!net.is_empty(), "no network {name} in {}", self.project);
        net
    }

    /// Injects `fault` into `service`'s container.
    pub fn inject(&self, service: &str, fault: Fault) {
        let id = self.container(service);
        let r = match fault {
            Fault::Stop => docker(&["stop", "-t", "2", &id]),
            Fault::Pause => docker(&["pause", &id]),
            Fault::Disconnect => {
                docker(&["network", "disconnect", &self.network("providers"), &id])
            }
        };
        r.unwrap_or_else(|e| panic!("{}: {e}", fault.name()));
    }

    /// Undoes `fault` on `service`'s container (a reconnected container gets its
    /// service name back as a DNS alias).
    pub fn restore(&self, service: &str, fault: Fault) {
        let id = self.container(service);
        let r = match fault {
            Fault::Stop => docker(&["start", &id]),
            Fault::Pause => docker(&["unpause", &id]),
            Fault::Disconnect => docker(&[
                "network",
                "connect",
                "--alias",
                service,
                &self.network("providers"),
                &id,
            ]),
        };
        r.unwrap_or_else(|e| panic!("undoing {}: {e}", fault.name()));
    }

    /// The last lines of every service's log.
    fn logs(&self) -> String {
        self.run(&["logs", "--no-color", "--tail", "80"])
            .unwrap_or_else(|e| e)
    }

    /// Value of one Envoy stat by exact name.
    pub fn stat(&self, name: &str) -> Option<u64> {
        envoy::stat(self.admin, name)
    }

    /// One of llm-breaker's per-upstream metrics, e.g. `upstream_stat("openai", "state")`.
    pub fn upstream_stat(&self, upstream: &str, metric: &str) -> u64 {
        envoy::upstream_stat(self.admin, upstream, metric)
    }

    /// Containers and networks still labelled with this project.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for args in [
            vec![
                "ps",
                "-a",
                "--filter",
                &label,
                "--format",
                "container {{.Names}}",
            ],
            vec![
                "network",
                "ls",
                "--filter",
                &label,
                "--format",
                "network {{.Name}}",
            ],
        ] {
            match docker(&args) {
                Ok(out) => left.extend(out.lines().map(str::to_string)),
                Err(e) => left.push(e),
            }
        }
        left
    }

    /// Removes the project's containers, networks and volumes (idempotent).
    pub fn down(&mut self) -> Result<(), String> {
        if self.down {
            return Ok(());
        }
        // Unpause first, in case an engine won't stop a paused container (unpausing
        // one that isn't paused just fails).
        let label = format!("label=com.docker.compose.project={}", self.project);
        if let Ok(ids) = docker(&["ps", "-q", "--filter", &label]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["unpause", id]);
            }
        }
        self.run(&["down", "-v", "--remove-orphans", "-t", "2"])?;
        self.down = true;
        Ok(())
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- compose logs ({}) ---\n{}", self.project, self.logs());
        }
        if let Err(e) = self.down() {
            eprintln!("tearing down {}: {e}", self.project);
        }
    }
}
