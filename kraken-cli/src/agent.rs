//! `kraken agent`: the pull side on every host.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use anyhow::{Context as _, bail};
use kraken_registry::agent::{Agent, AgentConfig};

use crate::config::{Role, Sources};
use crate::logging::say;

#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Registry and peer ports, data directory, trackers, build-indexes, allowed CIDRs, P2P
    /// limits, cleanup, TLS: see docs/agent.md.
    #[command(flatten)]
    sources: Sources,
    /// The IP other peers reach this agent at, when `peer_advertise` is not set (its port is
    /// then the peer listener's). Without it, an agent whose peer listener binds a wildcard
    /// address advertises the address of the interface of the default route.
    #[arg(long, value_name = "IP", env = "KRAKEN_PEER_IP")]
    peer_ip: Option<IpAddr>,
}

/// The defaults of `kraken config defaults agent`, with examples of the required keys.
pub(crate) fn defaults() -> AgentConfig {
    AgentConfig::new(
        SocketAddr::from(([0, 0, 0, 0], 16000)),
        "/var/cache/kraken/agent",
        vec!["http://tracker:15003".into()],
        vec!["build-index:15004".into()],
    )
}

/// The keys without a default.
pub(crate) const REQUIRED: &[&str] = &["listen", "data_dir", "trackers", "build_index"];

/// Loads and checks the settings without starting anything.
pub(crate) fn check(sources: &Sources) -> anyhow::Result<AgentConfig> {
    let config: AgentConfig = crate::config::load(Role::Agent, sources, &defaults())?;
    config.validate()?;
    Ok(config)
}

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = check(&args.sources)?;
    config.peer_advertise = advertise(&config, args.peer_ip)?;
    let agent = Agent::spawn(config).await.context("starting the agent")?;
    say(&format!(
        "agent listening on {} (registry port), peers on {}",
        agent.local_addr(),
        agent.peer_addr()
    ));
    crate::process::wait_for_signal().await?;
    agent.shutdown().await;
    Ok(())
}

/// The address to announce to trackers: `peer_advertise` when set; else `peer_ip` or, for a
/// peer listener on a wildcard address, the default route's source address — with port 0,
/// which the node replaces with its listener's port.
fn advertise(config: &AgentConfig, peer_ip: Option<IpAddr>) -> anyhow::Result<Option<SocketAddr>> {
    if config.peer_advertise.is_some() {
        return Ok(config.peer_advertise);
    }
    let listen = config
        .peer_listen
        .unwrap_or_else(|| SocketAddr::new(config.listen.ip(), 0));
    let ip = match peer_ip {
        Some(ip) => ip,
        None if listen.ip().is_unspecified() => default_route_ip().context(
            "finding this host's address for peers (set peer_advertise, --peer-ip or KRAKEN_PEER_IP)",
        )?,
        None => return Ok(None),
    };
    Ok(Some(SocketAddr::new(ip, listen.port())))
}

/// The source address of this host's default route: the address of the interface traffic to
/// the rest of the network leaves from. Connecting a UDP socket sends nothing; it only asks
/// the kernel which route (and so which source address) a packet would take.
pub(crate) fn default_route_ip() -> anyhow::Result<IpAddr> {
    let mut failures = Vec::new();
    // Documentation-range destinations (RFC 5737, RFC 3849): never local, so only a
    // default route reaches them.
    for (bind, target) in [("0.0.0.0:0", "192.0.2.1:9"), ("[::]:0", "[2001:db8::1]:9")] {
        let probe = UdpSocket::bind(bind).and_then(|socket| {
            socket.connect(target)?;
            socket.local_addr()
        });
        match probe {
            Ok(addr) if !addr.ip().is_unspecified() && !addr.ip().is_loopback() => {
                return Ok(addr.ip());
            }
            Ok(addr) => failures.push(format!("{target}: source {}", addr.ip())),
            Err(e) => failures.push(format!("{target}: {e}")),
        }
    }
    bail!("no default route ({})", failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the machine has a default route (`/proc/net/route` has a `00000000`
    /// destination), its source address is found and is a real interface address.
    #[test]
    fn the_default_route_source_is_found_when_there_is_one() {
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let has_default = routes
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
        match default_route_ip() {
            Ok(ip) => {
                assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
                // The address is this host's: a socket binds to it.
                UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
            }
            Err(e) => assert!(!has_default, "a default route exists but: {e:#}"),
        }
    }

    #[test]
    fn peer_ip_applies_only_without_peer_advertise() {
        let mut config = defaults();
        config.peer_listen = Some("0.0.0.0:16001".parse().unwrap());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            advertise(&config, Some(ip)).unwrap(),
            Some("10.1.2.3:16001".parse().unwrap())
        );
        config.peer_advertise = Some("10.9.9.9:7".parse().unwrap());
        assert_eq!(advertise(&config, Some(ip)).unwrap(), config.peer_advertise);
        // A specific listen address is announced as it is.
        config.peer_advertise = None;
        config.peer_listen = Some("127.0.0.5:16001".parse().unwrap());
        assert_eq!(advertise(&config, None).unwrap(), None);
    }
}
