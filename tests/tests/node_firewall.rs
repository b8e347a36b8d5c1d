//! The app node's metadata firewall (`deploy/node/startup.sh metadata-firewall`), for real:
//! the rules the startup script installs, run by the script itself in network namespaces.
//!
//! ```text
//!   app ns (the app container)      node ns (the host)                 meta ns
//!   eth0 10.88.0.2                  acme-app0 10.88.0.1  (the bridge)  lo 169.254.169.254
//!        fd00:88::2                           fd00:88::1                  fd20:ce::254
//!   default via the node            to-meta   10.99.0.1 / fd00:99::1      192.0.2.10 (not metadata)
//!                                   forwards, runs the firewall        eth0 10.99.0.2 / fd00:99::2
//! ```
//!
//! The meta namespace stands in for the metadata server: HTTP on ports 80 (the metadata API)
//! and 53 (DNS over TCP, for the test's purpose), a UDP echo on ports 53 and 7, on all its
//! addresses. The node keeps its access (Envoy and the agents run with `--network host`);
//! traffic from `acme-app0` (the app's docker bridge on a real node; a veth of that name
//! matches `-i` the same way) to the metadata addresses is refused, and only that: DNS to the
//! same address (the VM's resolver) and other addresses still pass.
//!
//! Needs root (network namespaces, iptables, ip6tables): `scripts/bootstrap.sh` installs the
//! Debian packages iptables and iproute2. Nothing is done outside the namespaces, which are
//! removed when a test ends, passed or failed.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use harness::{repo_root, STARTUP_TIMEOUT};

const BRIDGE: &str = "acme-app0";
const METADATA_V4: &str = "169.254.169.254";
const METADATA_V6: &str = "fd20:ce::254";
/// Another address in the meta namespace, same server: must stay reachable from the app.
const OTHER_V4: &str = "192.0.2.10";

/// The stand-in metadata server: HTTP on [::]:80 and [::]:53 (dual-stack: every address of the
/// namespace answers) and a UDP echo on ports 7 and 53 of each address given as an argument.
const META_SERVER: &str = r#"
import http.server, socket, socketserver, sys, threading

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"metadata stand-in\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Not HTTPServer.server_bind: its getfqdn() may try DNS, which has no route here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "meta", self.server_address[1]

# One UDP socket per address: a wildcard one would answer from the address the route picks,
# and the prober's connected socket would drop that.
def echo(udp):
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(data, peer)

for addr in sys.argv[1:]:
    for port in (7, 53):
        udp = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((addr, port))
        threading.Thread(target=echo, args=(udp,), daemon=True).start()
dns = Server(("::", 53), Handler)
threading.Thread(target=dns.serve_forever, daemon=True).start()
Server(("::", 80), Handler).serve_forever()
"#;

/// `probe tcp ADDR PORT`: an HTTP GET to ADDR:PORT; `probe udp ADDR PORT`: a datagram to
/// ADDR:PORT and its echo. Prints `ok`, `refused` (a TCP reset to the SYN, or an ICMP error), `reset` (after
/// connecting), `timeout` or `error: ...`. UDP resends a few times, so a lost datagram is not
/// taken for a block. The timeouts only bound a hang; nothing is asserted on time.
const PROBE: &str = r#"
import errno, socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET

def tcp():
    with socket.create_connection((addr, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: metadata\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    return "ok" if reply.startswith(b"HTTP/1.0 200") else "bad reply: %r" % reply[:80]

def udp():
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect((addr, port))
    for _ in range(5):
        s.send(b"probe")
        try:
            return "ok" if s.recv(64) == b"probe" else "bad reply"
        except (TimeoutError, socket.timeout):
            pass
    return "timeout"

try:
    print({"tcp": tcp, "udp": udp}[proto]())
except ConnectionRefusedError:
    print("refused")
except ConnectionResetError:
    print("reset")
except (TimeoutError, socket.timeout):
    print("timeout")
except OSError as e:
    print("error: %s" % (errno.errorcode.get(e.errno, e)))
"#;

/// Network namespaces named `<prefix>-<name>-<pid>`, and the processes started in them;
/// dropping it stops the processes and deletes the namespaces.
struct Namespaces {
    prefix: String,
    created: Vec<String>,
    children: Vec<Child>,
}

impl Namespaces {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            created: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The full name of namespace `name`.
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}-{}", self.prefix, std::process::id())
    }

    fn add(&mut self, name: &str) -> Result<String> {
        let ns = self.ns(name);
        // A leftover from a SIGKILLed run with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let out = Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .context("run `ip` (Debian package iproute2; scripts/bootstrap.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "`ip netns add {ns}` failed: {}\nthis test builds network namespaces and runs \
                 iptables in them: it needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and a \
                 kernel with network namespaces and nf_tables",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.created.push(ns.clone());
        // Loopback up; no duplicate address detection, so IPv6 addresses work at once.
        run_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        run_ns(
            &ns,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        Ok(ns)
    }

    fn spawn(&mut self, ns: &str, argv: &[&str]) -> Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {argv:?} in {ns}"))?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn output_ns(ns: &str, argv: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {argv:?} in {ns}"))
}

/// Runs `argv` in `ns`; fails with its output unless it succeeds. Returns its stdout.
fn run_ns(ns: &str, argv: &[&str]) -> Result<String> {
    let out = output_ns(ns, argv)?;
    ensure!(
        out.status.success(),
        "{argv:?} in {ns} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn python() -> &'static str {
    // The system python: the pyenv shim would add a process between `ip netns exec` and the
    // server the guard kills.
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn startup_sh() -> PathBuf {
    repo_root().join("deploy/node/startup.sh")
}

/// `startup.sh metadata-firewall BRIDGE` in `ns`: the rules it prints.
fn metadata_firewall(ns: &str) -> Result<String> {
    let script = startup_sh();
    let script = script.to_str().context("repo path is not UTF-8")?;
    run_ns(ns, &["bash", script, "metadata-firewall", BRIDGE])
}

/// What `PROBE proto addr port` run in `ns` printed: `proto_port` is `tcp/80`, `udp/53`...
fn probe(ns: &str, proto_port: &str, addr: &str) -> Result<String> {
    let (proto, port) = proto_port
        .split_once('/')
        .context("probe: want PROTO/PORT")?;
    Ok(run_ns(ns, &[python(), "-c", PROBE, proto, addr, port])?
        .trim()
        .to_string())
}

/// The metadata API, DNS, and another UDP port: what the probes try.
const PORTS: [&str; 4] = ["tcp/80", "tcp/53", "udp/53", "udp/7"];

/// A refusal: what the firewall's REJECT gives (a reset for TCP, an ICMP error for UDP).
fn refused(got: &str) -> bool {
    got == "refused" || got == "reset"
}

/// Emulates what docker leaves on a node: DOCKER-USER with docker's RETURN rule (Docker before
/// 28 appends it), FORWARD jumping to it; in ip6tables too (docker filters IPv6 there).
fn docker_chains(ns: &str) -> Result<()> {
    for ipt in ["iptables", "ip6tables"] {
        run_ns(ns, &[ipt, "-N", "DOCKER-USER"])?;
        run_ns(ns, &[ipt, "-A", "DOCKER-USER", "-j", "RETURN"])?;
        run_ns(ns, &[ipt, "-I", "FORWARD", "1", "-j", "DOCKER-USER"])?;
    }
    Ok(())
}

/// The three namespaces wired as in the module docs, the stand-in metadata server answering.
fn topology(nss: &mut Namespaces) -> Result<(String, String, String)> {
    let meta = nss.add("meta")?;
    let node = nss.add("node")?;
    let app = nss.add("app")?;
    let sh = |ns: &str, cmd: &str| -> Result<()> {
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        run_ns(ns, &argv).map(drop)
    };

    // The links are made from the node namespace: no name ever appears outside the test's.
    sh(
        &node,
        &format!("ip link add {BRIDGE} type veth peer name eth0 netns {app}"),
    )?;
    sh(
        &node,
        &format!("ip link add to-meta type veth peer name eth0 netns {meta}"),
    )?;
    sh(
        &node,
        "sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
    )?;
    for cmd in [
        format!("ip addr add 10.88.0.1/24 dev {BRIDGE}"),
        format!("ip addr add fd00:88::1/64 dev {BRIDGE} nodad"),
        "ip addr add 10.99.0.1/24 dev to-meta".to_string(),
        "ip addr add fd00:99::1/64 dev to-meta nodad".to_string(),
        format!("ip link set {BRIDGE} up"),
        "ip link set to-meta up".to_string(),
        format!("ip route add {METADATA_V4}/32 via 10.99.0.2"),
        format!("ip route add {OTHER_V4}/32 via 10.99.0.2"),
        format!("ip -6 route add {METADATA_V6}/128 via fd00:99::2"),
    ] {
        sh(&node, &cmd)?;
    }
    for cmd in [
        "ip addr add 10.88.0.2/24 dev eth0",
        "ip addr add fd00:88::2/64 dev eth0 nodad",
        "ip link set eth0 up",
        "ip route add default via 10.88.0.1",
        "ip -6 route add default via fd00:88::1",
    ] {
        sh(&app, cmd)?;
    }
    for cmd in [
        format!("ip addr add {METADATA_V4}/32 dev lo"),
        format!("ip addr add {OTHER_V4}/32 dev lo"),
        format!("ip addr add {METADATA_V6}/128 dev lo"),
        "ip addr add 10.99.0.2/24 dev eth0".to_string(),
        "ip addr add fd00:99::2/64 dev eth0 nodad".to_string(),
        "ip link set eth0 up".to_string(),
        "ip route add 10.88.0.0/24 via 10.99.0.1".to_string(),
        "ip -6 route add fd00:88::/64 via fd00:99::1".to_string(),
    ] {
        sh(&meta, &cmd)?;
    }

    nss.spawn(
        &meta,
        &[
            python(),
            "-c",
            META_SERVER,
            METADATA_V4,
            OTHER_V4,
            METADATA_V6,
        ],
    )?;
    // Up when the node reaches it on every address (bounded; nothing asserted on time).
    let start = Instant::now();
    loop {
        let mut up = true;
        for addr in [METADATA_V4, OTHER_V4, METADATA_V6] {
            up &= probe(&node, "tcp/80", addr)? == "ok" && probe(&node, "tcp/53", addr)? == "ok";
        }
        if up {
            break;
        }
        if let Some(Ok(Some(status))) = nss.children.last_mut().map(Child::try_wait) {
            bail!("the stand-in metadata server exited: {status}");
        }
        ensure!(
            start.elapsed() < STARTUP_TIMEOUT,
            "the stand-in metadata server in {meta} does not answer the node"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Before the firewall the app reaches the metadata server, so a refusal later is the
    // firewall's doing.
    for port in PORTS {
        for addr in [METADATA_V4, METADATA_V6] {
            let got = probe(&app, port, addr)?;
            ensure!(
                got == "ok",
                "without the firewall, app -> {addr} {port} should work, got {got}: \
                 the test's topology is wrong"
            );
        }
    }
    Ok((meta, node, app))
}

#[test]
fn app_cannot_reach_the_metadata_server_the_node_can() -> Result<()> {
    let mut nss = Namespaces::new("ae-fw");
    let (_meta, node, app) = topology(&mut nss)?;
    docker_chains(&node)?;

    let rules = metadata_firewall(&node)?;
    println!("startup.sh metadata-firewall {BRIDGE}:\n{rules}");
    let lines: Vec<&str> = rules.lines().collect();
    assert_eq!(
        lines,
        [
            "-N DOCKER-USER",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -p udp -m udp --dport 53 -j RETURN",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -p tcp -m tcp --dport 53 -j RETURN",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -p tcp -j REJECT --reject-with tcp-reset",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -j REJECT --reject-with icmp-port-unreachable",
            // docker's own rule stays, after ours
            "-A DOCKER-USER -j RETURN",
        ],
        "rules at the top of DOCKER-USER, before docker's RETURN"
    );
    let rules6 = run_ns(&node, &["ip6tables", "-S", "DOCKER-USER"])?;
    println!("ip6tables -S DOCKER-USER:\n{rules6}");
    assert_eq!(
        rules6.lines().collect::<Vec<_>>(),
        [
            "-N DOCKER-USER",
            "-A DOCKER-USER -d fd20:ce::254/128 -i acme-app0 -p udp -m udp --dport 53 -j RETURN",
            "-A DOCKER-USER -d fd20:ce::254/128 -i acme-app0 -p tcp -m tcp --dport 53 -j RETURN",
            "-A DOCKER-USER -d fd20:ce::254/128 -i acme-app0 -p tcp -j REJECT --reject-with tcp-reset",
            "-A DOCKER-USER -d fd20:ce::254/128 -i acme-app0 -j REJECT --reject-with icmp6-port-unreachable",
            "-A DOCKER-USER -j RETURN",
        ]
    );
    let forward = run_ns(&node, &["iptables", "-S", "FORWARD"])?;
    assert_eq!(
        forward.matches("-j DOCKER-USER").count(),
        1,
        "FORWARD jumps to DOCKER-USER once:\n{forward}"
    );

    for addr in [METADATA_V4, METADATA_V6] {
        for port in PORTS {
            // The node itself (Envoy, the agents: host network) keeps the metadata server.
            let node_got = probe(&node, port, addr)?;
            assert_eq!(node_got, "ok", "node -> {addr} {port}");
            // The app: refused at once (a reset, an ICMP error), not left to time out; DNS
            // to the same address still answers.
            let got = probe(&app, port, addr)?;
            println!("app -> {addr} {port}: {got}");
            if port.ends_with("/53") {
                assert_eq!(got, "ok", "app -> {addr} {port}: DNS must pass");
            } else {
                assert!(
                    refused(&got),
                    "app -> {addr} {port} should be refused, got {got}"
                );
            }
        }
    }
    // Only the metadata address: the rest of the meta namespace, same server, still answers.
    for port in PORTS {
        let got = probe(&app, port, OTHER_V4)?;
        println!("app -> {OTHER_V4} {port}: {got}");
        assert_eq!(got, "ok", "app -> {OTHER_V4} {port}");
    }

    // Idempotent: a second run (the next boot's script, the unit's ExecStartPre) adds nothing.
    let again = metadata_firewall(&node)?;
    assert_eq!(again, rules, "second run changed DOCKER-USER");
    assert_eq!(
        run_ns(&node, &["ip6tables", "-S", "DOCKER-USER"])?,
        rules6,
        "second run changed ip6tables DOCKER-USER"
    );
    assert_eq!(
        run_ns(&node, &["iptables", "-S", "FORWARD"])?,
        forward,
        "second run changed FORWARD"
    );
    assert!(again.contains("-d 169.254.169.254/32") && again.contains("-i acme-app0"));
    assert!(refused(&probe(&app, "tcp/80", METADATA_V4)?));
    assert_eq!(probe(&app, "udp/53", METADATA_V4)?, "ok");
    assert_eq!(probe(&node, "tcp/80", METADATA_V4)?, "ok");
    Ok(())
}

/// Before docker has made its chains (or without docker): the script makes DOCKER-USER and
/// FORWARD's jump to it, as docker would, and leaves IPv6 alone when docker does not filter it.
#[test]
fn makes_the_chain_when_docker_has_not() -> Result<()> {
    let mut nss = Namespaces::new("ae-fw0");
    let node = nss.add("node")?;

    let rules = metadata_firewall(&node)?;
    println!("startup.sh metadata-firewall {BRIDGE} (no docker chains):\n{rules}");
    assert_eq!(
        rules.lines().collect::<Vec<_>>(),
        [
            "-N DOCKER-USER",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -p udp -m udp --dport 53 -j RETURN",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -p tcp -m tcp --dport 53 -j RETURN",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -p tcp -j REJECT --reject-with tcp-reset",
            "-A DOCKER-USER -d 169.254.169.254/32 -i acme-app0 -j REJECT --reject-with icmp-port-unreachable",
        ]
    );
    let forward = run_ns(&node, &["iptables", "-S", "FORWARD"])?;
    assert!(
        forward.lines().any(|l| l == "-A FORWARD -j DOCKER-USER"),
        "{forward}"
    );
    let v6 = output_ns(&node, &["ip6tables", "-S", "DOCKER-USER"])?;
    assert!(
        !v6.status.success(),
        "no ip6tables DOCKER-USER without docker's: {}",
        String::from_utf8_lossy(&v6.stdout)
    );

    assert_eq!(
        metadata_firewall(&node)?,
        rules,
        "second run changed DOCKER-USER"
    );
    assert_eq!(run_ns(&node, &["iptables", "-S", "FORWARD"])?, forward);

    // A bad bridge name is refused, and nothing is installed for it.
    let script = startup_sh();
    let bad = output_ns(
        &node,
        &[
            "bash",
            script.to_str().context("repo path is not UTF-8")?,
            "metadata-firewall",
            "no such bridge",
        ],
    )?;
    assert!(!bad.status.success());
    assert_eq!(run_ns(&node, &["iptables", "-S", "DOCKER-USER"])?, rules);
    Ok(())
}
