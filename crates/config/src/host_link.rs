//! `[host_link]`: inside a VM run by `selfheal vm`, the link to the host.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// The guest's end of the link to `selfheal vm` on the host: heartbeats
/// and every event, one JSON line each, over a virtio-serial port. Used
/// only when the port exists, so the default costs nothing outside a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostLinkConfig {
    /// The port: a name (looked up as `/dev/virtio-ports/NAME`, then in
    /// `/sys/class/virtio-ports`) or a device path; `""` turns the link off.
    pub port: String,
    /// Time between heartbeats (10ms to 10s). The host's `heartbeat_timeout`
    /// must be several of these.
    #[serde(deserialize_with = "de_heartbeat")]
    pub heartbeat: HumanDuration,
    /// Take the host's word on when it stopped the VM for checkpoints: a
    /// CPU stall is reported only when what those stops leave of it
    /// reaches `[stall] bound`.
    pub excuse_host_stops: bool,
    /// Ask the host how long each vCPU thread waited for a host CPU (TCG)
    /// and take its word: a CPU stall is reported only when what those
    /// waits (and the stops) leave of it reaches `[stall] bound`. Off by
    /// default: measured on a loaded host it removed most canary alerts but
    /// no false diagnosis, and delayed a real stall's report (docs/vm.md).
    pub excuse_host_waits: bool,
}

impl Default for HostLinkConfig {
    fn default() -> Self {
        HostLinkConfig {
            port: "org.selfheal.0".into(),
            heartbeat: HumanDuration::from_millis(100),
            excuse_host_stops: true,
            excuse_host_waits: false,
        }
    }
}

fn de_heartbeat<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    let ms = v.get().as_millis();
    if !(10..=10_000).contains(&ms) {
        return Err(de::Error::custom(format!(
            "host_link heartbeat {v} is out of range; use 10ms to 10s (default 100ms)"
        )));
    }
    Ok(v)
}
